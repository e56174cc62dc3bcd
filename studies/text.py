"""Text cells for CSV files a researcher opens in a spreadsheet: the formula-injection guard.

Spreadsheet programs run a cell that starts with =, +, -, @ (or a tab or carriage return before
one) as a formula, and model output or annotator text may do that on purpose. Every *text* cell
(prompts, responses, rationales, names, labels) that starts with one of = + - @ tab CR, or with a
single quote, gets one single quote prepended (OWASP "CSV Injection"). To recover the exact text,
strip one leading quote from a text cell that starts with it: `unescape_cell` does that.

A neutral home: the study's CSV exports (`studies/estimate/export.py`), the participants' approval
list and the preference-pair import all use it, and none of them should import another for it.
"""

from __future__ import annotations

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "'")


def safe_text(value: str | None) -> str:
    """A text cell, with the formula-injection guard described in the module docstring."""
    if value is None:
        return ""
    return "'" + value if value.startswith(_DANGEROUS) else value


def unescape_cell(value: str) -> str:
    """Invert `safe_text` for a text cell read back from the CSV."""
    return value[1:] if value.startswith("'") else value
