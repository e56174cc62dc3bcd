"""bench/_report.py: a benchmark that rewrites its section of docs/benchmarks.md replaces its own
figures and keeps what was written by hand under them (a before/after, a rerun's reading) and
every other section."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _report import NOTES, write_section  # noqa: E402

DOC = f"""# Benchmarks

## A bench

| figure | 1.0 ms |

{NOTES}

Before and after, alternated: 1.0 → 0.9 ms.

## Another bench

| other | 7 |

## Last bench

| last | 3 |
"""


def test_rewriting_a_section_keeps_its_hand_written_notes_and_the_other_sections(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    write_section(doc, "## A bench", "## A bench\n\n| figure | 2.0 ms |\n")
    text = doc.read_text()
    assert "| figure | 2.0 ms |" in text
    assert "1.0 ms |" not in text
    assert text.index("| figure | 2.0 ms |") < text.index(NOTES) < text.index("Before and after, alternated")
    assert text.index("Before and after, alternated") < text.index("## Another bench")
    assert "\n\n## Another bench\n\n| other | 7 |\n\n## Last bench\n" in text


def test_a_section_without_notes_is_replaced_whole_and_a_new_one_appended(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    write_section(doc, "## Last bench", "## Last bench\n\n| last | 4 |\n")
    write_section(doc, "## New bench", "## New bench\n\n| new | 1 |\n")
    text = doc.read_text()
    assert text.endswith("\n\n## Last bench\n\n| last | 4 |\n\n## New bench\n\n| new | 1 |\n")
    assert "| last | 3 |" not in text
    assert text.count(NOTES) == 1
