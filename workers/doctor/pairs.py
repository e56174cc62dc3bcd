"""Preference pairs for training a doctor: from a population, from judgments, and as CSV.

A pair says that, for ``prompt``, the text ``chosen`` is preferred to the text ``rejected``. Pure
Python and NumPy (no Django, no torch).

Ties follow theory.md §1's per-position rule: two responses of equal utility (or one text
against itself) never make a pair, and when several responses tie at the top (or at the
bottom) of a type, each of them takes an equal share of that type's weight, as each tied
position is picked with equal probability.

From a population (``U`` of T types × N texts, type weights ``w``):

- ``rule="per_type"``: for each type, its best text(s) against its worst text(s)
  (``mode="extremes"``), or every strictly ordered pair (``mode="all"``); each type's pairs
  share its weight ``w_t`` equally.
- ``rule="weighted"``: one best and one worst text for the whole population, by the
  type-weighted mean of each type's *mid-quantile* under μ (the reference distribution,
  uniform by default): ``q_t(i) = μ(U_t < U_ti) + ½ μ(U_t = U_ti)``. Only the order of
  utilities within a type enters, so a monotone rescaling of one source cannot move the pair
  (the scale-free rule of issue #11); the best and worst share weight 1.

From judgments: the picked text against each distinct shown text that was not picked;
"can't decide" makes no pair.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

__all__ = [
    "CSV_HEADER",
    "JudgmentRecord",
    "PairsCSVError",
    "PairsRowError",
    "PromptSplit",
    "TextPair",
    "mid_quantiles",
    "pairs_from_judgments",
    "pairs_from_population",
    "read_pairs_csv",
    "split_prompts",
    "training_pairs",
    "write_pairs_csv",
]

CSV_HEADER = ("prompt", "chosen", "rejected", "weight", "source")
_REQUIRED = CSV_HEADER[:3]
_DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "'")


@dataclasses.dataclass(frozen=True)
class TextPair:
    """``chosen`` is preferred to ``rejected`` as an answer to ``prompt``.

    Attributes
    ----------
    prompt, chosen, rejected
        Texts; ``chosen`` and ``rejected`` differ after ``str.strip()``.
    weight
        Positive weight of the pair in the training loss (a type's share, see the module).
    source
        Where it came from: ``"type:<label>"``, ``"weighted"``, ``"judgment"`` or ``"csv"``.
    """

    prompt: str
    chosen: str
    rejected: str
    weight: float = 1.0
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("prompt", "chosen", "rejected", "source"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: expected a string")
        if self.chosen.strip() == self.rejected.strip():
            raise ValueError("chosen: equals rejected (a tie makes no pair)")
        if not (
            isinstance(self.weight, (int, float))
            and math.isfinite(self.weight)
            and self.weight > 0
        ):
            raise ValueError(
                f"weight: expected a finite number > 0, got {self.weight!r}"
            )


@dataclasses.dataclass(frozen=True)
class JudgmentRecord:
    """One annotator judgment as plain values: the texts shown and the one picked.

    ``picked`` is ``None`` for "can't decide". Shown texts may repeat (they are distinct
    candidates in a study, but copies are harmless here).
    """

    prompt: str
    shown: tuple[str, ...]
    picked: str | None


# --------------------------------------------------------------------------------------------
# From a population
# --------------------------------------------------------------------------------------------


class _CheckedPopulation(NamedTuple):
    texts: list[str]
    utilities: np.ndarray
    weights: np.ndarray
    reference: np.ndarray


def _check_population(
    texts: Sequence[str],
    utilities: np.ndarray,
    weights: Sequence[float] | np.ndarray | None,
    reference: Sequence[float] | np.ndarray | None,
) -> _CheckedPopulation:
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts: expected a non-empty sequence of strings")
    u = np.asarray(utilities, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] != len(texts) or u.shape[0] < 1:
        raise ValueError(f"utilities: expected shape (T, {len(texts)}), got {u.shape}")
    if not np.isfinite(u).all():
        raise ValueError("utilities: contains NaN or infinity")
    if weights is None:
        w = np.full(u.shape[0], 1.0 / u.shape[0])
    else:
        w = np.asarray(weights, dtype=np.float64)
        if (
            w.shape != (u.shape[0],)
            or not np.isfinite(w).all()
            or (w < 0).any()
            or w.sum() <= 0
        ):
            raise ValueError(
                f"weights: expected {u.shape[0]} non-negative finite numbers with a positive sum"
            )
        w = w / w.sum()
    if reference is None:
        mu = np.full(len(texts), 1.0 / len(texts))
    else:
        mu = np.asarray(reference, dtype=np.float64)
        if (
            mu.shape != (len(texts),)
            or not np.isfinite(mu).all()
            or (mu < 0).any()
            or mu.sum() <= 0
        ):
            raise ValueError(
                f"reference: expected {len(texts)} non-negative finite numbers with a positive sum"
            )
        mu = mu / mu.sum()
    return _CheckedPopulation(texts, u, w, mu)


def _split(
    prompt: str,
    texts: Sequence[str],
    winners: Iterable[int],
    losers: Iterable[int],
    weight: float,
    source: str,
) -> list[TextPair]:
    """Every (winner, loser) combination, sharing ``weight`` equally; equal texts make no pair."""
    combos = [
        (i, j) for i in winners for j in losers if texts[i].strip() != texts[j].strip()
    ]
    return [
        TextPair(prompt, texts[i], texts[j], weight / len(combos), source)
        for i, j in combos
    ]


def mid_quantiles(utilities: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``q[t, i] = μ(U_t < U_ti) + ½ μ(U_t = U_ti)``, shape (T, N): each type's calibrated quantile."""
    u = np.asarray(utilities, dtype=np.float64)
    below = (u[:, None, :] < u[:, :, None]) @ reference
    tied = (u[:, None, :] == u[:, :, None]) @ reference
    out: np.ndarray = below + 0.5 * tied
    return out


def pairs_from_population(
    prompt: str,
    texts: Sequence[str],
    utilities: np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    *,
    rule: Literal["per_type", "weighted"] = "per_type",
    mode: Literal["extremes", "all"] = "extremes",
    labels: Sequence[str] | None = None,
    reference: Sequence[float] | np.ndarray | None = None,
) -> list[TextPair]:
    """Preference pairs of one prompt's pool from its population (see the module docstring).

    Parameters
    ----------
    prompt
        The prompt the texts answer.
    texts
        N candidate texts (distinct after ``strip()``; equal ones never pair).
    utilities
        (T, N) utilities, higher preferred.
    weights
        (T,) type weights, normalised; default uniform. Types of weight 0 make no pairs.
    rule
        ``"per_type"`` or ``"weighted"``.
    mode
        For ``"per_type"``: ``"extremes"`` (best against worst) or ``"all"`` (every strictly
        ordered pair). Ignored by ``"weighted"``.
    labels
        T type labels for ``source``; default ``"0"``, ``"1"``, ...
    reference
        (N,) reference distribution μ for ``"weighted"``'s quantiles; default uniform.

    Returns
    -------
    list[TextPair]
        Empty when every type (or the weighted score) is indifferent.
    """
    texts, u, w, mu = _check_population(texts, utilities, weights, reference)
    if labels is None:
        labels = [str(t) for t in range(u.shape[0])]
    if len(labels) != u.shape[0]:
        raise ValueError(f"labels: expected {u.shape[0]} labels, got {len(labels)}")
    if rule == "weighted":
        score = w @ mid_quantiles(u, mu)
        top, bottom = score.max(), score.min()
        if np.isclose(top, bottom, rtol=0, atol=1e-12):
            return []
        winners = np.flatnonzero(np.isclose(score, top, rtol=0, atol=1e-12))
        losers = np.flatnonzero(np.isclose(score, bottom, rtol=0, atol=1e-12))
        return _split(prompt, texts, winners, losers, 1.0, "weighted")
    if rule != "per_type":
        raise ValueError(f"rule: expected 'per_type' or 'weighted', got {rule!r}")
    if mode not in ("extremes", "all"):
        raise ValueError(f"mode: expected 'extremes' or 'all', got {mode!r}")
    pairs: list[TextPair] = []
    for t in range(u.shape[0]):
        row, source = u[t], f"type:{labels[t]}"
        if w[t] == 0 or row.max() == row.min():
            continue
        if mode == "extremes":
            pairs += _split(
                prompt,
                texts,
                np.flatnonzero(row == row.max()),
                np.flatnonzero(row == row.min()),
                w[t],
                source,
            )
            continue
        ordered = [
            (i, j)
            for i in range(len(texts))
            for j in range(len(texts))
            if row[i] > row[j]
        ]
        ordered = [(i, j) for i, j in ordered if texts[i].strip() != texts[j].strip()]
        pairs += [
            TextPair(prompt, texts[i], texts[j], w[t] / len(ordered), source)
            for i, j in ordered
        ]
    return pairs


# --------------------------------------------------------------------------------------------
# From judgments
# --------------------------------------------------------------------------------------------


def pairs_from_judgments(records: Iterable[JudgmentRecord]) -> list[TextPair]:
    """The picked text against each distinct shown text not picked, per judgment.

    A "can't decide" (``picked is None``) makes no pair; texts equal to the picked one after
    ``strip()`` are skipped (a tie). Each pair has weight 1 and source ``"judgment"``.

    Raises
    ------
    ValueError
        When a picked text is not among the shown ones (naming the record's position).
    """
    pairs = []
    for n, record in enumerate(records):
        if not isinstance(record, JudgmentRecord):
            raise ValueError(f"records[{n}]: expected a JudgmentRecord")
        if record.picked is None:
            continue
        if record.picked not in record.shown:
            raise ValueError(
                f"records[{n}]: the picked text is not one of the shown texts"
            )
        others = dict.fromkeys(
            t for t in record.shown if t.strip() != record.picked.strip()
        )
        pairs += [
            TextPair(record.prompt, record.picked, other, 1.0, "judgment")
            for other in others
        ]
    return pairs


# --------------------------------------------------------------------------------------------
# A prompt split: what a doctor may learn from
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PromptSplit:
    """Prompts a doctor learns from (``train``) and prompts kept for measuring it (``held_out``)."""

    train: tuple[str, ...]
    held_out: tuple[str, ...]


def split_prompts(
    prompts: Sequence[str], held_out_fraction: float, seed: int
) -> PromptSplit:
    """A seeded split of distinct prompts: round(fraction × n) held out (at least one, never all).

    Why by prompt: a doctor measured on the prompts whose candidates built its pairs is
    measured on its training data; held-out prompts say whether it learnt the taste.
    """
    unique = list(dict.fromkeys(prompts))
    if len(unique) < 2:
        raise ValueError("prompts: a split needs at least two distinct prompts")
    if not (0 < held_out_fraction < 1):
        raise ValueError(
            f"held_out_fraction: expected a number in (0, 1), got {held_out_fraction!r}"
        )
    count = min(max(1, round(held_out_fraction * len(unique))), len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    held = {unique[i] for i in order[:count]}
    return PromptSplit(
        tuple(p for p in unique if p not in held), tuple(p for p in unique if p in held)
    )


def training_pairs(
    pairs: Iterable[TextPair],
    held_out_prompts: Iterable[str],
    held_out_texts: Iterable[str] = (),
) -> list[TextPair]:
    """The pairs that touch nothing held out: no held-out prompt, and no held-out text on either side.

    ``held_out_texts`` are the candidates of the held-out prompts (a text such as "Sure!" may be
    sampled for a training prompt too) and any texts a study holds out of its pools; texts
    compare after ``strip()``.
    """
    prompts = set(held_out_prompts)
    texts = {t.strip() for t in held_out_texts}
    return [
        p
        for p in pairs
        if p.prompt not in prompts
        and p.chosen.strip() not in texts
        and p.rejected.strip() not in texts
    ]


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def _safe(value: str) -> str:
    """Formula-injection guard, the same reversible rule as ``studies/text.py``'s ``safe_text``."""
    return "'" + value if value.startswith(_DANGEROUS) else value


def _unsafe(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def write_pairs_csv(
    pairs: Iterable[TextPair], out: io.TextIOBase | None = None
) -> str | None:
    """Write ``prompt,chosen,rejected,weight,source`` rows; return the text when ``out`` is None.

    Text cells that start with ``= + - @``, a tab, a CR or a quote get one quote prepended
    (as in the study exports); :func:`read_pairs_csv` strips it again, so a round trip is exact.
    """
    buffer = io.StringIO()
    target: io.TextIOBase = buffer if out is None else out
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for pair in pairs:
        writer.writerow(
            [
                _safe(pair.prompt),
                _safe(pair.chosen),
                _safe(pair.rejected),
                repr(float(pair.weight)),
                _safe(pair.source),
            ]
        )
    return buffer.getvalue() if out is None else None


@dataclasses.dataclass(frozen=True)
class PairsRowError:
    """One problem in a pairs CSV; ``line`` is 1-based (the header is line 1)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class PairsCSVError(ValueError):
    """A pairs CSV was rejected; ``errors`` lists the problems found (at most ``max_errors``)."""

    def __init__(self, errors: list[PairsRowError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class _TooMany(Exception):
    pass


def _header(names: list[str] | None) -> tuple[list[str], str | None]:
    if not names:
        return [], "the file is empty; expected a header row 'prompt,chosen,rejected'"
    names = [n.strip().lower() for n in names]
    missing = [c for c in _REQUIRED if c not in names]
    unknown = [c for c in names if c not in CSV_HEADER]
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if missing or unknown or duplicated:
        parts = [f"missing column(s) {', '.join(missing)}"] if missing else []
        parts += [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
        parts += [f"repeated column(s) {', '.join(duplicated)}"] if duplicated else []
        return names, "header: " + "; ".join(
            parts
        ) + f" (expected {', '.join(CSV_HEADER)}; the last two are optional)"
    return names, None


def _row(
    cells: dict[str, str], max_field_chars: int
) -> tuple[TextPair | None, str | None]:
    for name, value in cells.items():
        if len(value) > max_field_chars:
            return None, f"{name}: longer than {max_field_chars} characters"
        if "\x00" in value:
            return None, f"{name}: contains a NUL character"
    for name in _REQUIRED:
        if not cells[name].strip():
            return None, f"{name}: is empty"
    raw_weight = cells.get("weight", "").strip() or "1"
    try:
        weight = float(raw_weight)
    except ValueError:
        return None, f"weight: expected a number, got {raw_weight[:24]!r}"
    text = {name: _unsafe(cells[name]) for name in ("prompt", "chosen", "rejected")}
    source = _unsafe(cells.get("source", "")) or "csv"
    try:
        return TextPair(
            text["prompt"], text["chosen"], text["rejected"], weight, source
        ), None
    except ValueError as exc:
        return None, str(exc)


def _read_rows(
    reader: Any,
    names: list[str],
    errors: list[PairsRowError],
    max_rows: int,
    max_field_chars: int,
    max_errors: int,
) -> list[TextPair]:
    """The pairs of the data rows; problems go to ``errors`` (reading stops at ``max_errors``)."""
    pairs: list[TextPair] = []

    def fail(line: int, message: str) -> None:
        errors.append(PairsRowError(line, message))
        if len(errors) >= max_errors:
            raise _TooMany

    rows = 0
    try:
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                fail(reader.line_num, f"unreadable CSV: {exc}")
                break
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            rows += 1
            if rows > max_rows:
                fail(line, f"more than {max_rows} rows")
                break
            if len(cells) != len(names):
                fail(line, f"expected {len(names)} cells, got {len(cells)}")
                continue
            pair, problem = _row(dict(zip(names, cells, strict=True)), max_field_chars)
            if pair is None:
                fail(line, problem or "invalid row")
            else:
                pairs.append(pair)
    except _TooMany:
        pass
    return pairs


def read_pairs_csv(
    data: str | bytes,
    *,
    max_rows: int = 100_000,
    max_field_chars: int = 100_000,
    max_errors: int = 20,
) -> list[TextPair]:
    """Read pairs written by :func:`write_pairs_csv` (or by hand): all rows valid, or nothing.

    Required columns ``prompt, chosen, rejected`` (any order, case-insensitive); optional
    ``weight`` (a positive number, default 1) and ``source`` (default ``"csv"``). A leading
    quote on a text cell is removed (the export's formula guard).

    Raises
    ------
    PairsCSVError
        Listing up to ``max_errors`` problems with their line numbers: bad or missing header,
        a wrong number of cells, an empty or over-long field, NUL characters, chosen equal to
        rejected, a weight that is not a positive number, more than ``max_rows`` rows, or
        bytes that are not UTF-8. No pair is returned when any row is bad.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PairsCSVError(
                [PairsRowError(1, f"the file is not UTF-8 (byte {exc.start})")]
            ) from None
    data = data.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(data, newline=""))
    try:
        names, problem = _header(next(reader, None))
    except csv.Error as exc:
        raise PairsCSVError([PairsRowError(1, f"unreadable CSV: {exc}")]) from None
    if problem:
        raise PairsCSVError([PairsRowError(1, problem)])
    errors: list[PairsRowError] = []
    pairs = _read_rows(reader, names, errors, max_rows, max_field_chars, max_errors)
    if errors:
        raise PairsCSVError(errors)
    return pairs
