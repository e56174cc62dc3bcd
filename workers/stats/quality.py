"""The quality statistics of a study: position bias, agreement, time on task. Pure NumPy/SciPy.

Like `intervals.py`, these take the flat arrays that `studies/estimate/results.py` pulls from the
database (one entry per judgment) and return frozen dataclasses; they need no database.

Public API
----------
position_bias(chosen_position, n_shown) -> PositionBias
annotator_agreement(item_ids, choices, n_shown) -> Agreement
time_on_task(latency_ms) -> TimeOnTask
proportion(count, n, *, confidence) -> Proportion
attention_failure_rate(passed) -> Proportion
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from ._validation import _check_1d

__all__ = [
    "Agreement",
    "PositionBias",
    "Proportion",
    "TimeOnTask",
    "annotator_agreement",
    "attention_failure_rate",
    "position_bias",
    "proportion",
    "time_on_task",
]


@dataclass(frozen=True)
class PositionBias:
    """Pick rate per displayed position (1-based) against the chance rate.

    shown[s]: judgments in which position s+1 was shown; picked[s]: how often it was chosen;
    chance[s]: the expected pick rate of a position-blind annotator, mean of 1/K over the
    judgments that showed it. chi2/p_value: Pearson's test of picked against its expectation
    (approximate when K varies between judgments).
    """

    positions: tuple[int, ...]
    shown: tuple[int, ...]
    picked: tuple[int, ...]
    pick_rate: tuple[float, ...]
    chance_rate: tuple[float, ...]
    chi2: float
    df: int
    p_value: float
    n: int


@dataclass(frozen=True)
class Agreement:
    """Agreement among annotators on items that several people judged.

    observed: Fleiss' mean pairwise agreement P̄ (two annotators of one item chose the same text).
    chance: the mean over items of 1/K, the agreement of position-blind random choosers.
    kappa: Brennan–Prediger free-marginal kappa (observed - chance) / (1 - chance).
    n_items: items with at least two non-excluded choices; n_pairs: annotator pairs compared.
    """

    observed: float
    chance: float
    kappa: float
    n_items: int
    n_pairs: int


@dataclass(frozen=True)
class TimeOnTask:
    """Latency from render to pick, in seconds (NaN when there is none)."""

    n: int
    median_s: float
    q25_s: float
    q75_s: float
    p90_s: float
    mean_s: float


@dataclass(frozen=True)
class Proportion:
    """count out of n, with a Wilson score interval."""

    count: int
    n: int
    rate: float
    low: float
    high: float


# ---------------------------------------------------------------------------------------------
# Quality statistics
# ---------------------------------------------------------------------------------------------


def position_bias(
    chosen_position: npt.ArrayLike, n_shown: npt.ArrayLike
) -> PositionBias:
    """Pick rate per displayed position.

    Parameters
    ----------
    chosen_position : (n,) ints, 1-based displayed position of the pick (Judgment.chosen_slot)
    n_shown : (n,) ints, how many texts that judgment showed (K ≥ 1)
    """
    pos = _check_1d(chosen_position, "chosen_position")
    shown_k = _check_1d(n_shown, "n_shown")
    if pos.shape != shown_k.shape:
        raise ValueError(
            f"n_shown must have the same length as chosen_position ({pos.size}), got {shown_k.size}"
        )
    if pos.size == 0:
        return PositionBias((), (), (), (), (), math.nan, 0, math.nan, 0)
    pos, shown_k = pos.astype(np.int64), shown_k.astype(np.int64)
    if (shown_k < 1).any():
        raise ValueError("n_shown must be at least 1")
    if (pos < 1).any() or (pos > shown_k).any():
        raise ValueError("chosen_position must lie between 1 and n_shown")
    max_k = int(shown_k.max())
    # shown[s] = #judgments with K > s; expected picks of position s+1 = Σ_{K > s} 1/K.
    k_counts = np.bincount(shown_k, minlength=max_k + 1)
    shown = np.array([k_counts[s + 1 :].sum() for s in range(max_k)])
    inverse = k_counts / np.maximum(np.arange(max_k + 1), 1)
    expected = np.array([inverse[s + 1 :].sum() for s in range(max_k)])
    picked = np.bincount(pos - 1, minlength=max_k)
    ok = expected > 0
    chi2 = float(np.sum((picked[ok] - expected[ok]) ** 2 / expected[ok]))
    df = int(ok.sum()) - 1
    p_value = float(stats.chi2.sf(chi2, df)) if df > 0 else math.nan
    return PositionBias(
        positions=tuple(range(1, max_k + 1)),
        shown=tuple(int(v) for v in shown),
        picked=tuple(int(v) for v in picked),
        pick_rate=tuple(float(v) for v in picked / np.maximum(shown, 1)),
        chance_rate=tuple(float(v) for v in expected / np.maximum(shown, 1)),
        chi2=chi2,
        df=df,
        p_value=p_value,
        n=int(pos.size),
    )


def annotator_agreement(
    item_ids: npt.ArrayLike, choices: npt.ArrayLike, n_shown: npt.ArrayLike
) -> Agreement:
    """Pairwise agreement on items judged by several annotators, against chance.

    Parameters
    ----------
    item_ids : (n,) labels; choices : (n,) the chosen text (candidate id or canonical slot);
    n_shown : (n,) texts shown in that item (K). Excluded choices must be dropped first.

    Fleiss' (1971) per-item agreement P_i = Σ_c n_ic (n_ic - 1) / (n_i (n_i - 1)), averaged over
    the items with n_i ≥ 2. Items show different numbers of texts and the texts have no
    meaning across items, so the chance agreement is that of position-blind random choosers,
    mean 1/K_i, and kappa is the free-marginal kappa of Brennan & Prediger (1981, EPM 41(3)).
    """
    items = _check_1d(item_ids, "item_ids")
    picks = _check_1d(choices, "choices")
    shown_k = _check_1d(n_shown, "n_shown")
    if not (items.shape == picks.shape == shown_k.shape):
        raise ValueError("item_ids, choices and n_shown must have the same length")
    if items.size == 0:
        return Agreement(math.nan, math.nan, math.nan, 0, 0)
    _, first_index, item_codes = np.unique(
        items, return_index=True, return_inverse=True
    )
    _, pick_codes = np.unique(picks, return_inverse=True)
    item_codes, pick_codes = item_codes.reshape(-1), pick_codes.reshape(-1)
    width = int(pick_codes.max()) + 1
    cells, cell_counts = np.unique(
        item_codes.astype(np.int64) * width + pick_codes, return_counts=True
    )
    cell_items = cells // width
    n_items = int(item_codes.max()) + 1
    n_i = np.bincount(item_codes, minlength=n_items).astype(np.float64)
    same = np.bincount(
        cell_items, weights=cell_counts * (cell_counts - 1.0), minlength=n_items
    )
    several = n_i >= 2
    if not several.any():
        return Agreement(math.nan, math.nan, math.nan, 0, 0)
    per_item = same[several] / (n_i[several] * (n_i[several] - 1))
    observed = float(per_item.mean())
    chance = float(np.mean(1.0 / shown_k[first_index][several].astype(np.float64)))
    kappa = (observed - chance) / (1.0 - chance) if chance < 1 else math.nan
    n_pairs = int(np.sum(n_i[several] * (n_i[several] - 1) / 2))
    return Agreement(observed, chance, float(kappa), int(several.sum()), n_pairs)


def time_on_task(latency_ms: npt.ArrayLike) -> TimeOnTask:
    """Quantiles of the render-to-pick latency; missing values (NaN) are dropped."""
    arr = _check_1d(latency_ms, "latency_ms").astype(np.float64)
    arr = arr[~np.isnan(arr)] / 1000.0
    if arr.size == 0:
        return TimeOnTask(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    q25, median, q75, p90 = np.quantile(arr, [0.25, 0.5, 0.75, 0.9])
    return TimeOnTask(
        int(arr.size),
        float(median),
        float(q25),
        float(q75),
        float(p90),
        float(arr.mean()),
    )


def proportion(count: int, n: int, *, confidence: float = 0.95) -> Proportion:
    """count/n with the Wilson (1927) score interval; NaN when n is 0."""
    if n == 0:
        return Proportion(0, 0, math.nan, math.nan, math.nan)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    rate = count / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Proportion(count, n, rate, max(0.0, centre - half), min(1.0, centre + half))


def attention_failure_rate(passed: npt.ArrayLike) -> Proportion:
    """Share of attention-check judgments that failed; passed is (n,) bools (True = passed)."""
    arr = _check_1d(passed, "passed").astype(bool)
    return proportion(int((~arr).sum()), int(arr.size))
