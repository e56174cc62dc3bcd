"""Checks of untrusted text at the edge: control characters, NUL, lone surrogates, strict JSON.

Every value that arrives from outside (a link's parameters, a rationale, an imported file) passes
through one of these before it reaches a model or the database, so that hostile input gets a
sentence saying what is wrong (a 4xx), never a database error (a 500).

- NUL can't be stored in PostgreSQL text or jsonb; a lone surrogate can't be encoded as UTF-8.
- Other control characters (C0 except tab, newline and carriage return; DEL; C1) are invisible,
  can break terminals and CSV consumers, and have no place in prompts or identifiers.
- JSON: Python's parser accepts NaN and Infinity (which PostgreSQL's jsonb refuses), turns 1e400
  into inf, and recurses without bound on nesting.
"""

from __future__ import annotations

import json
import math
import re

# C0 controls except \t \n \r, DEL and the C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class JSONProblem(ValueError):
    """Imported JSON was refused; the message is a readable sentence."""


def text_problem(value: str) -> str | None:
    """What is wrong with `value` as stored text (a phrase), or None when it is fine."""
    if "\x00" in value:
        return "contains a NUL character"
    if _SURROGATE.search(value):
        return "contains an unpaired surrogate (not valid Unicode text)"
    bad = _CONTROL.search(value)
    if bad:
        return f"contains the control character U+{ord(bad.group()):04X}"
    return None


def strip_controls(value: str) -> str:
    """`value` without NUL, lone surrogates and control characters (tab and newlines are kept)."""
    return _SURROGATE.sub("", _CONTROL.sub("", value))


def _refuse_constant(name: str) -> float:
    raise JSONProblem(f"{name} is not allowed in JSON (use null or a number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONProblem(f"the number {text[:20]} is too large")
    return value


def loads_strict(text: str, *, max_depth: int) -> object:
    """`json.loads`, refusing NaN and ±Infinity, numbers out of range, nesting deeper than
    `max_depth` and strings that `text_problem` rejects (keys included). Raises JSONProblem."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise JSONProblem(f"nested deeper than {max_depth} levels") from None
    except JSONProblem:
        raise
    except json.JSONDecodeError as exc:
        raise JSONProblem(f"not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # an integer with more digits than Python converts
        raise JSONProblem(f"not valid JSON ({str(exc)[:80]})") from None
    _check_tree(value, max_depth)
    return value


def _check_tree(value: object, max_depth: int) -> None:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            problem = text_problem(node)
            if problem:
                raise JSONProblem(f"a string {problem}")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise JSONProblem(f"nested deeper than {max_depth} levels")
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)
