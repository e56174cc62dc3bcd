"""The utilities CSV an admin uploads: read it row by row, then resolve its candidate ids.

:func:`read_utilities_csv` checks the file's shape and cells (no database needed);
:func:`utilities_by_group` places each row's utility in its prompt's column and checks that
every type covers every candidate; :func:`utilities_from_csv` does both. Every problem is
collected with its line number and raised together as a :class:`UtilitiesCSVError`.

Pure Python and NumPy: the web process imports this module (the admin's upload), so it
imports no model code and no torch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from ._validation import _weights
from .combine import SourceUtilities

Fail = Callable[[int, str], None]
#: What a group is (a prompt id, say): any hashable value, the same type throughout one call.
G = TypeVar("G", bound=Hashable)


@dataclasses.dataclass(frozen=True)
class CsvRowError:
    """One problem in an uploaded utilities CSV; ``line`` is 1-based (the header is line 1)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class UtilitiesCSVError(ValueError):
    """An uploaded utilities CSV was rejected; ``errors`` lists every problem found (capped)."""

    def __init__(self, errors: list[CsvRowError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


_CSV_REQUIRED = ("type", "candidate_id", "utility")


_CSV_OPTIONAL = ("weight",)


@dataclasses.dataclass(frozen=True)
class CandidateColumn(Generic[G]):
    """Where the utilities of one candidate id go: column ``column`` of group ``group`` (a prompt).

    ``names`` gives, for each checking column a CSV may carry (for example ``"prompt_id"``), the
    cell values that fit this candidate; a row whose cell is none of them is an error.
    """

    group: G
    column: int
    names: Mapping[str, Collection[str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class UtilityRow:
    """One well-formed row of a utilities CSV, before its candidate id is resolved."""

    line: int
    type: str
    candidate_id: int
    utility: float
    weight: float | None
    checks: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class UtilitiesTable:
    """A utilities CSV read row by row (:func:`read_utilities_csv`).

    ``rows`` are the well-formed rows, ``errors`` the problems of the others (resolving the
    ids with :func:`utilities_by_group` adds its own and raises them all together), and
    ``rejected`` the (type, candidate id) pairs of rows with errors, which are not reported
    missing again.
    """

    rows: tuple[UtilityRow, ...]
    errors: tuple[CsvRowError, ...]
    header_line: int
    has_weight: bool
    rejected: frozenset[tuple[str, int]]

    @property
    def candidate_ids(self) -> set[int]:
        return {row.candidate_id for row in self.rows}


def _collect(errors: list[CsvRowError], max_errors: int) -> Fail:
    def fail(line: int, message: str) -> None:
        errors.append(CsvRowError(line, message))
        if len(errors) >= max_errors:
            raise UtilitiesCSVError(sorted(errors, key=lambda e: e.line))

    return fail


def _max_errors(max_errors: int) -> None:
    if (
        isinstance(max_errors, bool)
        or not isinstance(max_errors, int)
        or max_errors < 1
    ):
        raise ValueError(f"max_errors: expected an integer >= 1, got {max_errors!r}")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


_CSV_MAX_CELL = 1000  # characters; labels, ids and numbers are far shorter


class _GuardedRows:
    """csv.reader's rows with its `line_num`; a malformed row (or a cell past csv's own field size
    limit) becomes a CsvRowError instead of csv.Error escaping as a 500."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    @property
    def line_num(self) -> int:
        return int(self._reader.line_num)

    def __iter__(self) -> _GuardedRows:
        return self

    def __next__(self) -> list[str]:
        try:
            return list(next(self._reader))
        except csv.Error as exc:
            raise UtilitiesCSVError(
                [CsvRowError(self.line_num, f"malformed CSV ({exc})")]
            ) from None


def read_utilities_csv(
    text: str,
    *,
    check_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    max_errors: int = 20,
) -> UtilitiesTable:
    """Read a long-format utilities CSV whose rows name candidates by their id.

    Format: a header row, then one row per (type, candidate)::

        type,candidate_id,utility,weight
        novice,101,1.5,2
        novice,102,-0.25,2
        expert,101,0.0,1
        expert,102,3,1

    - ``type``: the user type's label (any non-empty text).
    - ``candidate_id``: the candidate's database id (an integer); which prompt and which column
      it stands for is resolved later (:func:`utilities_by_group`).
    - ``utility``: a finite number; higher is preferred. Only its order within a type matters.
    - ``weight`` (optional column): the type's weight, repeated on its rows (blank cells allowed
      if at least one row of the type gives it).
    - ``check_columns`` (optional columns, named by the caller, for example ``prompt_id``): cells
      checked against the candidate when the ids are resolved.
    - ``ignore_columns`` (optional columns, named by the caller): allowed and not read.

    Column names are matched case-insensitively; other columns are rejected (they are usually
    typos). Problems of the header raise at once; problems of rows are collected in
    ``errors`` (with their line numbers) and raised with those of :func:`utilities_by_group`,
    or at once when there are ``max_errors`` of them.

    Raises
    ------
    UtilitiesCSVError
        A ``ValueError`` whose ``errors`` are :class:`CsvRowError` (line, message) pairs.
    ValueError
        For invalid arguments.
    """
    if not isinstance(text, str):
        raise ValueError("text: expected the CSV as a string (decode the upload first)")
    checks, ignored = _column_names(check_columns, ignore_columns)
    _max_errors(max_errors)
    errors: list[CsvRowError] = []
    fail = _collect(errors, max_errors)

    reader = _GuardedRows(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    header = _read_header(reader, _CSV_REQUIRED + _CSV_OPTIONAL + checks + ignored)
    col = {name: header.columns.index(name) for name in header.columns}
    rows = _RowReader(
        width=len(header.columns),
        col=col,
        checks=tuple(c for c in checks if c in col),
        fail=fail,
    )
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if any(len(cell) > _CSV_MAX_CELL for cell in row):
            fail(reader.line_num, f"a cell is longer than {_CSV_MAX_CELL} characters")
            continue
        rows.read(row, reader.line_num)
    if not rows.rows and not errors:
        fail(header.line, "no utility rows")
    return UtilitiesTable(
        tuple(rows.rows),
        tuple(errors),
        header.line,
        "weight" in col,
        frozenset(rows.rejected),
    )


def _column_names(
    check_columns: Sequence[str], ignore_columns: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The caller's checking and ignored column names, lower-cased; never a format column."""
    checks = tuple(c.strip().lower() for c in check_columns)
    ignored = tuple(c.strip().lower() for c in ignore_columns)
    for name, names in (("check_columns", checks), ("ignore_columns", ignored)):
        if any(not c or c in _CSV_REQUIRED + _CSV_OPTIONAL for c in names):
            raise ValueError(
                f"{name}: expected names other than {', '.join(_CSV_REQUIRED + _CSV_OPTIONAL)}"
            )
    return checks, ignored


class _Header(NamedTuple):
    line: int
    columns: list[str]


def _read_header(reader: _GuardedRows, allowed: tuple[str, ...]) -> _Header:
    """Skip blank lines, read the header and raise at once if its columns are wrong."""
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(reader, None)
    if header is None:
        raise UtilitiesCSVError(
            [
                CsvRowError(
                    1, "the file is empty; expected a header type,candidate_id,utility"
                )
            ]
        )
    line = reader.line_num
    columns = [cell.strip().lower() for cell in header]
    problems = _header_problems(columns, allowed)
    if problems:
        raise UtilitiesCSVError(
            [CsvRowError(line, problems + f" (allowed: {', '.join(allowed)})")]
        )
    return _Header(line, columns)


def _header_problems(columns: list[str], allowed: tuple[str, ...]) -> str:
    """What is wrong with the header's columns, or ``""``."""
    unknown = [c for c in columns if c not in allowed]
    missing = [c for c in _CSV_REQUIRED if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    parts = []
    if "candidate" in columns and "candidate_id" in missing:
        parts.append(
            "the candidate column is now candidate_id: the candidate's id (as in the candidates "
            "export and the admin), no longer its position"
        )
        unknown.remove("candidate")
        missing.remove("candidate_id")
    if missing:
        parts.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        parts.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
    if repeated:
        parts.append(f"repeated column(s) {', '.join(repeated)}")
    return "; ".join(parts)


def _number(raw: str) -> float:
    """``float(raw)``, or NaN when ``raw`` is not a number."""
    try:
        return float(raw)
    except ValueError:
        return math.nan


@dataclasses.dataclass
class _RowReader:
    """Reads the data rows of a utilities CSV, collecting the good ones and failing the rest.

    ``col`` maps each column name to its position; ``checks`` are the checking columns present.
    ``seen`` maps each (type, candidate id) to its first line, ``rejected`` holds the pairs of
    rows whose weight or utility was bad (so they are not reported missing later).
    """

    width: int
    col: dict[str, int]
    checks: tuple[str, ...]
    fail: Fail
    rows: list[UtilityRow] = dataclasses.field(default_factory=list)
    seen: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    rejected: set[tuple[str, int]] = dataclasses.field(default_factory=set)

    def read(self, row: list[str], line: int) -> None:
        col, fail = self.col, self.fail
        if len(row) != self.width:
            fail(line, f"expected {self.width} cells, got {len(row)}")
            return
        label = row[col["type"]].strip()
        if not label:
            fail(line, "type is empty")
            return
        raw_id = row[col["candidate_id"]].strip()
        try:
            candidate_id = int(raw_id)
        except ValueError:
            fail(line, f"candidate_id {raw_id!r} is not an integer")
            return
        key = (label, candidate_id)
        if key in self.seen:
            fail(
                line,
                f"type {label!r} candidate {candidate_id} repeats line {self.seen[key]}",
            )
            return
        self.seen[key] = line
        weight = None
        if "weight" in col and row[col["weight"]].strip():
            raw_weight = row[col["weight"]].strip()
            weight = _number(raw_weight)
            if not math.isfinite(weight) or weight < 0:
                fail(line, f"weight {raw_weight!r} is not a finite number >= 0")
                self.rejected.add(key)
                return
        raw_utility = row[col["utility"]].strip()
        utility = _number(raw_utility)
        if not math.isfinite(utility):
            fail(line, f"utility {raw_utility!r} is not a finite number")
            self.rejected.add(key)
            return
        cells = tuple((name, row[col[name]].strip()) for name in self.checks)
        self.rows.append(UtilityRow(line, label, candidate_id, utility, weight, cells))


# --------------------------------------------------------------------------------------------
# Resolving candidate ids
# --------------------------------------------------------------------------------------------


def _clip(value: str, limit: int = 24) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _shown(values: Sequence[object], limit: int = 10) -> str:
    return ", ".join(map(str, values[:limit])) + (
        ", ..." if len(values) > limit else ""
    )


class _TypeWeight(NamedTuple):
    """A type's weight in one group and the line that first gave it."""

    weight: float
    line: int


@dataclasses.dataclass
class _GroupCells:
    """What the rows of one group gave: utilities by (type, column), each type's first line
    (in order of first appearance) and weight."""

    cells: dict[tuple[str, int], float] = dataclasses.field(default_factory=dict)
    first_line: dict[str, int] = dataclasses.field(default_factory=dict)
    weights: dict[str, _TypeWeight] = dataclasses.field(default_factory=dict)


def utilities_by_group(
    table: UtilitiesTable,
    *,
    candidates: Mapping[int, CandidateColumn[G]],
    sizes: Mapping[G, int],
    refused: Mapping[int, str] | None = None,
    group_names: Mapping[G, str] | None = None,
    max_errors: int = 20,
) -> dict[G, SourceUtilities]:
    """Resolve the candidate ids of ``table`` into one :class:`SourceUtilities` per group.

    Parameters
    ----------
    table
        From :func:`read_utilities_csv`; its row errors are raised together with these.
    candidates
        Candidate id → :class:`CandidateColumn` (its group and column there) for every
        candidate the file may name.
    sizes
        Group → number of columns N. Every group must be covered: each type that appears in a
        group gives exactly one utility to each of its N columns, and a group without rows is
        an error.
    refused
        Candidate id → why it can't be used (for example ``"belongs to another study"``), for ids
        that exist but are not in ``candidates``; other unknown ids are reported as such.
    group_names
        Group → how messages name it (default ``repr(group)``).

    Returns
    -------
    dict
        Group → ``SourceUtilities`` with utilities (T_g, N_g) in column order, weights (T_g,)
        (normalised; equal without a weight column) and type labels in order of first appearance.
        Types are per group: a label's weight must agree within a group, not across groups.

    Raises
    ------
    UtilitiesCSVError
        Every problem found (row errors first read, then unknown ids, mismatched checking cells,
        missing utilities, weights), sorted by line, capped at ``max_errors``.
    ValueError
        For invalid arguments.
    """
    _max_errors(max_errors)
    refused = refused or {}
    group_names = group_names or {}
    by_column = _columns_by_group(candidates, sizes)

    def name(group: G) -> str:
        return group_names.get(group, repr(group))

    errors = list(table.errors)
    fail = _collect(errors, max_errors)
    rejected = set(table.rejected)
    groups = {group: _GroupCells() for group in sizes}
    for row in table.rows:
        ref = candidates.get(row.candidate_id)
        if ref is None:
            reason = refused.get(row.candidate_id)
            fail(
                row.line,
                f"candidate {row.candidate_id} {reason}"
                if reason
                else f"no candidate has id {row.candidate_id}",
            )
            continue
        _place_row(row, ref, groups[ref.group], rejected, fail, name)
    for group, n in sizes.items():
        _check_group(
            groups[group],
            n,
            by_column[group],
            table,
            rejected=rejected,
            fail=fail,
            group_name=name(group),
        )
    if errors:
        raise UtilitiesCSVError(sorted(errors, key=lambda e: e.line))
    return {
        group: _group_utilities(groups[group], n, table.has_weight)
        for group, n in sizes.items()
    }


def _columns_by_group(
    candidates: Mapping[int, CandidateColumn[G]], sizes: Mapping[G, int]
) -> dict[G, dict[int, int]]:
    """Group → column → candidate id, after checking that the arguments agree."""
    for group, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"sizes: group {group!r} needs an integer number of columns >= 1, got {n!r}"
            )
    by_column: dict[G, dict[int, int]] = {group: {} for group in sizes}
    for candidate_id, ref in candidates.items():
        if ref.group not in sizes or not 0 <= ref.column < sizes[ref.group]:
            raise ValueError(
                f"candidates: id {candidate_id} points outside sizes ({ref.group!r}, column {ref.column})"
            )
        if ref.column in by_column[ref.group]:
            raise ValueError(
                f"candidates: ids {by_column[ref.group][ref.column]} and {candidate_id} share a column"
            )
        by_column[ref.group][ref.column] = candidate_id
    return by_column


def _place_row(
    row: UtilityRow,
    ref: CandidateColumn[G],
    group: _GroupCells,
    rejected: set[tuple[str, int]],
    fail: Fail,
    name: Callable[[G], str],
) -> None:
    """Put ``row``'s utility in its candidate's column, unless its checks or weight disagree."""
    group.first_line.setdefault(row.type, row.line)
    key = (row.type, row.candidate_id)
    wrong = [(c, v) for c, v in row.checks if c in ref.names and v not in ref.names[c]]
    if wrong:
        shown = ", ".join(f"{c} {_clip(v)!r}" for c, v in wrong)
        fail(
            row.line,
            f"{shown} does not match candidate {row.candidate_id} (of {name(ref.group)})",
        )
        rejected.add(key)
        return
    if row.weight is not None:
        known = group.weights.get(row.type)
        if known is not None and known.weight != row.weight:
            fail(
                row.line,
                f"weight {row.weight:g} of type {row.type!r} differs from {known.weight:g} on line {known.line}",
            )
            rejected.add(key)
            return
        group.weights.setdefault(row.type, _TypeWeight(row.weight, row.line))
    group.cells[row.type, ref.column] = row.utility


def _check_group(
    group: _GroupCells,
    n: int,
    by_column: dict[int, int],
    table: UtilitiesTable,
    *,
    rejected: set[tuple[str, int]],
    fail: Fail,
    group_name: str,
) -> None:
    """Every type of the group covers its ``n`` columns, and its weights are consistent."""
    labels = group.first_line
    if not labels:
        fail(
            table.header_line,
            f"no utility rows for {group_name} (candidates {_shown(sorted(by_column.values()))})",
        )
        return
    for label, line in labels.items():
        absent = [
            by_column.get(i, f"column {i}")
            for i in range(n)
            if (label, i) not in group.cells
            and (label, by_column.get(i)) not in rejected
        ]
        if absent:
            fail(
                line,
                f"type {label!r} has no utility for candidate(s) {_shown(absent)} of {group_name}",
            )
    if table.has_weight:
        unweighted = [label for label in labels if label not in group.weights]
        if unweighted and len(unweighted) < len(labels):
            fail(
                labels[unweighted[0]],
                f"type {unweighted[0]!r} has no weight while other types of {group_name} have one",
            )
        elif (
            not unweighted and sum(group.weights[label].weight for label in labels) <= 0
        ):
            fail(table.header_line, f"all weights of {group_name} are zero")


def _group_utilities(group: _GroupCells, n: int, has_weight: bool) -> SourceUtilities:
    """The group's utilities (T, n) in column order, with its (normalised) type weights."""
    labels = list(group.first_line)
    u = np.array(
        [[group.cells[label, i] for i in range(n)] for label in labels],
        dtype=np.float64,
    )
    if has_weight and all(label in group.weights for label in labels):
        w = _weights(
            "weight", [group.weights[label].weight for label in labels], len(labels)
        )
    else:
        w = np.full(len(labels), 1.0 / len(labels))
    return SourceUtilities(u, w, labels)


def utilities_from_csv(
    text: str,
    *,
    candidates: Mapping[int, CandidateColumn[G]],
    sizes: Mapping[G, int],
    refused: Mapping[int, str] | None = None,
    check_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    group_names: Mapping[G, str] | None = None,
    max_errors: int = 20,
) -> dict[G, SourceUtilities]:
    """:func:`read_utilities_csv` then :func:`utilities_by_group`: one ``SourceUtilities`` per group.

    Use the two steps when the ids to ``refuse`` depend on which ids the file names.

    Examples
    --------
    >>> where = {101: CandidateColumn("p1", 0), 102: CandidateColumn("p1", 1)}
    >>> text = "type,candidate_id,utility\\nme,102,1\\nme,101,0\\n"
    >>> utilities_from_csv(text, candidates=where, sizes={"p1": 2})["p1"].utilities
    array([[0., 1.]])
    """
    table = read_utilities_csv(
        text,
        check_columns=check_columns,
        ignore_columns=ignore_columns,
        max_errors=max_errors,
    )
    return utilities_by_group(
        table,
        candidates=candidates,
        sizes=sizes,
        refused=refused,
        group_names=group_names,
        max_errors=max_errors,
    )
