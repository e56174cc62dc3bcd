"""What the benchmarks that keep their own section of docs/benchmarks.md share: printing the
section under the command that made it, and replacing that section in the file."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path


def command_line(script: str, argv: list[str] | None) -> str:
    """The command to rerun this benchmark, as the docs show it."""
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", script, *(argv if argv is not None else sys.argv[1:])])


# In a section, what follows this line was written by hand (a before/after, a rerun's reading) and
# is kept when the benchmark writes its section again.
NOTES = "<!-- notes written by hand: kept when the benchmark rewrites this section -->"


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section under `heading` (up to the next ``## `` heading) or append it; the old
    section's hand-written notes (from the `NOTES` line on) are kept under the new one."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)
    if found:
        old = found.group(0)
        notes = old[old.index(NOTES) :].rstrip("\n") if NOTES in old else ""
        new = section.rstrip("\n") + ("\n\n" + notes if notes else "")
        text = text[: found.start()] + new + "\n\n" + text[found.end() :].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def publish(section: str, heading: str, path: Path | None) -> None:
    """Print the section; with `path`, also write it there."""
    print()
    print(section)
    if path is not None:
        write_section(path, heading, section)
