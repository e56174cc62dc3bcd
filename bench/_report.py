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


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section under `heading` (up to the next ``## `` heading) or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def publish(section: str, heading: str, path: Path | None) -> None:
    """Print the section; with `path`, also write it there."""
    print()
    print(section)
    if path is not None:
        write_section(path, heading, section)
