"""Adaptive allocation: which cells get the next judgments first (issue #22, docs/theory.md §11).

Pure NumPy (no Django): the periodic job of `studies.allocation` and the simulation of
`bench/bench_allocation.py` call the same `allocate`, so what the bench validates is what the product
runs. The rule reads each cell's anytime-valid confidence sequence (`workers.stats.sequential`: the
Robbins-mixture CS of the cell's prompt means) *now*, and gives every cell a priority; the claim hands
out the open items of the highest priority first (`ComparisonItem.priority`).

The rule (`RULE_VERSION`), per cell, the first that applies:

1. not of interest (the pre-registered question does not read it): NOT_ASKED, priority 0;
2. fewer than `min_units` prompts: EARLY, priority 2 (the asymptotic CS says nothing yet);
3. in an opponent group (one policy, k and m against several opponents; the annotators' adversary is
   the opponent the policy does worst against) and surely not the worst: its CS lies above another
   member's (low > the group's smallest high): ELIMINATED, priority 0 (successive elimination);
4. its own question is answered: the CS lies above or below the cell's threshold c, or inside
   c ± margin: ANSWERED, priority 0; or, for a study without a question (`half_width` given), the
   CS is narrow enough (radius ≤ half_width): NARROW, priority 0;
5. one of the LUCB pair of a group with two or more contenders left (Kalyanakrishnan, Tewari, Auer &
   Stone 2012, "PAC subset selection in stochastic multi-armed bandits", ICML, for the worst arm: the
   leader with the lowest estimate and, among the others, the challenger with the lowest low end):
   LUCB, priority 2;
6. otherwise OPEN, priority 1.

Within a priority the claim takes the items with the fewest live assignments, so the undecided cells
share the judgments evenly (successive elimination) and the decided ones wait. Why this keeps every
interval valid: the CS of a cell covers its win rate at every number of its prompts at once, so
choosing from past data when a cell gets its next prompt (or that it gets none) is choosing a
stopping time per cell, which the CS allows (theory.md §11). Priorities only order the items; what is
claimed stays each cell's i.i.d. prompts.

Public API
----------
CellStats                         the sufficient statistics of each cell's units (n, mean, Σ squares)
CellStats.of(units_per_cell)      from each cell's prompt means
CellStats.add(cell_mask, unit)    the stats after one more unit in some cells (the bench)
allocate(stats, …) -> Allocation  states and priorities, vectorised over leading axes (studies)
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.stats.sequential import MIN_UNITS, mixture_radius

__all__ = [
    "ANSWERED",
    "EARLY",
    "ELIMINATED",
    "LUCB",
    "NARROW",
    "NOT_ASKED",
    "OPEN",
    "PRIORITY",
    "RULE_VERSION",
    "STATE_NAMES",
    "Allocation",
    "CellStats",
    "allocate",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Changes whenever `allocate` could decide differently on the same data; recorded with every run.
RULE_VERSION = "lucb-se-1"

#: Cell states, in the order of the module docstring.
NOT_ASKED, EARLY, ELIMINATED, ANSWERED, NARROW, LUCB, OPEN = range(7)
STATE_NAMES = ("not asked", "early", "eliminated", "answered", "narrow", "lucb", "open")
#: The priority each state writes on the cell's items (higher is handed out first).
PRIORITY = np.array([0, 2, 0, 0, 0, 2, 1], dtype=np.int64)


@dataclass(frozen=True)
class CellStats:
    """Per cell (last axis; leading axes: studies), its units' count, mean and Σ (X − mean)²."""

    n: FloatArray
    mean: FloatArray
    squares: FloatArray

    @classmethod
    def of(cls, units: Seq[npt.ArrayLike]) -> CellStats:
        """The stats of one study's cells from each cell's units (its prompt means; may be empty)."""
        n, mean, squares = [], [], []
        for cell in units:
            x = np.asarray(cell, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(x)):
                raise ValueError("units must be finite (NaN or inf found)")
            n.append(float(x.size))
            mean.append(float(x.mean()) if x.size else 0.0)
            squares.append(float(((x - x.mean()) ** 2).sum()) if x.size else 0.0)
        return cls(np.array(n), np.array(mean), np.array(squares))

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> CellStats:
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape))

    def add(self, where: npt.NDArray[np.bool_], unit: FloatArray) -> CellStats:
        """One more unit `unit` in the cells `where` (Welford's update); the others unchanged."""
        n = self.n + where
        delta = np.where(where, unit - self.mean, 0.0)
        mean = self.mean + delta / np.maximum(n, 1.0)
        squares = self.squares + np.where(where, delta * (unit - mean), 0.0)
        return CellStats(n, mean, squares)


@dataclass(frozen=True)
class Allocation:
    """What `allocate` decided, per cell: the CS now (estimate ± radius; inf radius without a
    unit), the state (`STATE_NAMES`) and the priority its items get."""

    estimate: FloatArray
    radius: FloatArray
    state: IntArray
    priority: IntArray

    @property
    def low(self) -> FloatArray:
        return self.estimate - self.radius

    @property
    def high(self) -> FloatArray:
        return self.estimate + self.radius


def _per_cell(value: float | npt.ArrayLike | None, cells: int, name: str) -> FloatArray:
    """A scalar or one value per cell, as a (cells,) array; NaN for None (no such question)."""
    out = np.broadcast_to(
        np.asarray(np.nan if value is None else value, dtype=np.float64), (cells,)
    )
    if np.any(np.isinf(out)):
        raise ValueError(f"{name} must be finite")
    return np.array(out, dtype=np.float64)


def _answered(
    low: FloatArray, high: FloatArray, threshold: FloatArray, margin: FloatArray
) -> npt.NDArray[np.bool_]:
    """The cell's question "is θ ≥ c?" is answered: CS above c, below c, or inside c ± margin."""
    asked = ~np.isnan(threshold)
    c = np.where(asked, threshold, 0.0)
    decided = (
        (low > c)
        | (high < c)
        | ((margin > 0) & (low > c - margin) & (high < c + margin))
    )
    return np.asarray(asked & decided, dtype=bool)


def _groups(
    low: FloatArray,
    high: FloatArray,
    estimate: FloatArray,
    groups: IntArray,
    live: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per cell: eliminated (surely not its group's worst) and in its group's LUCB pair.

    `live`: cells whose CS may be read (not early); the others neither eliminate nor are eliminated.
    """
    eliminated = np.zeros(low.shape, dtype=bool)
    pair = np.zeros(low.shape, dtype=bool)
    for g in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == g)
        if members.size < 2:
            continue
        lo = np.where(live[..., members], low[..., members], -np.inf)
        hi = np.where(live[..., members], high[..., members], np.inf)
        out = lo > hi.min(axis=-1, keepdims=True)
        eliminated[..., members] = out
        contenders = ~out
        several = contenders.sum(axis=-1, keepdims=True) >= 2
        est = np.where(contenders, estimate[..., members], np.inf)
        leader = np.argmin(est, axis=-1)[..., None]
        others = contenders & (np.arange(members.size) != leader)
        challenger = np.argmin(np.where(others, lo, np.inf), axis=-1)[..., None]
        idx = np.arange(members.size)
        pair[..., members] = (
            several & contenders & ((idx == leader) | (idx == challenger))
        )
    return eliminated, pair


def _membership(
    groups: npt.ArrayLike | None, of_interest: npt.ArrayLike | None, cells: int
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Each cell's group id (−1: none) and whether the question reads it, checked."""
    group = np.full(cells, -1, dtype=np.int64)
    asked = np.ones(cells, dtype=bool)
    if groups is not None:
        group = np.asarray(groups, dtype=np.int64)
    if of_interest is not None:
        asked = np.asarray(of_interest, dtype=bool)
    if group.shape != (cells,) or asked.shape != (cells,):
        raise ValueError("groups and of_interest need one entry per cell")
    return group, asked


def allocate(
    stats: CellStats,
    *,
    alpha: float,
    rho: float | npt.ArrayLike,
    half_width: float | None = None,
    threshold: float | npt.ArrayLike | None = None,
    margin: float | npt.ArrayLike = 0.0,
    groups: npt.ArrayLike | None = None,
    of_interest: npt.ArrayLike | None = None,
    max_variance: float = 0.25,
    min_units: int = MIN_UNITS,
) -> Allocation:
    """Each cell's state and priority from its stats now (module docstring), over the last axis.

    alpha: the CS's level per cell; rho: the CS's ρ (`sequential.tuned_rho`), one or one per cell;
    half_width: narrow enough (None: no such target); threshold / margin: each cell's question
    "is θ ≥ c?" (None or NaN: none); groups: a group id per cell (−1: none), the opponents of one policy, k and m; of_interest: per
    cell, whether the question reads it (default all); max_variance: ¼ for [0, 1] credits.
    """
    if not 0 < alpha < 1 or (half_width is not None and not half_width > 0):
        raise ValueError(
            f"alpha must be in (0, 1) and half_width positive, got {alpha!r}, {half_width!r}"
        )
    if not isinstance(min_units, int) or min_units < 1:
        raise ValueError(f"min_units must be a positive integer, got {min_units!r}")
    cells = stats.n.shape[-1]
    thr, marg, rhos = (
        _per_cell(v, cells, name)
        for v, name in ((threshold, "threshold"), (margin, "margin"), (rho, "rho"))
    )
    group, asked = _membership(groups, of_interest, cells)
    if np.any(marg < 0) or not np.all(rhos > 0):
        raise ValueError("margin must be ≥ 0 and rho positive")
    n = stats.n
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = np.where(
            n > 0,
            mixture_radius(
                np.maximum(n, 1.0),
                stats.squares,
                alpha=alpha,
                rho=rhos,
                max_variance=max_variance,
            ),
            np.inf,
        )
    low, high = stats.mean - radius, stats.mean + radius
    early = n < min_units
    eliminated, pair = _groups(low, high, stats.mean, group, ~early)
    state = np.full(n.shape, OPEN, dtype=np.int64)
    state[pair] = LUCB
    if half_width is not None:
        state[radius <= half_width] = NARROW
    state[_answered(low, high, thr, marg)] = ANSWERED
    state[eliminated] = ELIMINATED
    state[early] = EARLY
    state[..., ~asked] = NOT_ASKED
    return Allocation(stats.mean.copy(), radius, state, PRIORITY[state])
