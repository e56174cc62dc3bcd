"""Win rates with honest intervals: one cell, few clusters, and the robust f̂(k). Pure NumPy/SciPy.

Everything here takes the flat arrays that `studies/estimate/results.py` pulls from the database (one
entry per judgment) and returns frozen dataclasses, so a researcher can call it from a notebook
on the CSV export (`studies/estimate/export.py`) and the tests can call it without a database.
The study's quality statistics (position bias, agreement, time on task) are in `quality.py`.

Credit rule (docs/theory.md §1): a judgment credits the policy c_A / (c_A + c_B), the share of
the chosen text that came from the policy's k draws; a "can't decide" is either excluded or
credited k / (k + m). The arrays given here already hold the credit.

Items decided by construction (all k + m draws one text, so the credit is k / (k + m) whatever
anyone picks) are never judged; `studies/estimate/results.py` passes each as one row flagged `decided`
with a weight, and the win-rate functions give such rows their prompt but no annotator.

Public API
----------
win_rate_interval(credit, prompt_ids, annotator_ids, *, weights, decided, confidence, n_resamples, rng)
    -> WinRateInterval
few_clusters_interval(...), design_interval(...) -> WinRateInterval
robust_win_rate_interval(credit, prompt_ids, annotator_ids, opponent_ids, *, weights, decided, ...)
    -> RobustWinRate
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from ._validation import (
    FloatArray,
    IntArray,
    _check_1d,
    _iv_win_rate,
    _recode,
)

__all__ = [
    "RobustWinRate",
    "WinRateInterval",
    "credit_variance_floor",
    "design_interval",
    "few_clusters_interval",
    "few_clusters_warning",
    "robust_win_rate_interval",
    "uses_few_clusters_interval",
    "win_rate_interval",
]

METHOD_CGM = (
    "two-way cluster-robust (CGM) variance, t with min(G_prompt, G_annotator) - 1 df"
)
METHOD_TOO_FEW = (
    "fewer than 2 prompts or 2 annotators: no interval beyond [0, 1] is honest"
)
METHOD_FEW = (
    "two-way cluster-robust (CGM) variance, t with conservative Satterthwaite df "
    "(each component at its 75% upper confidence bound)"
)
#: Fewer clusters than this in a dimension and an interval rests on < 4 df there.
FEW_CLUSTERS = 5
#: Upper confidence level at which `few_clusters_interval` evaluates each variance component.
FEW_CLUSTERS_DF_LEVEL = 0.75
METHOD_ROBUST = (
    "min over opponents; simultaneous sup-t band over the opponents' CGM intervals"
)


# ---------------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WinRateInterval:
    """A win rate with its interval.

    estimate: (weighted) mean credit over the rows (the point estimate always uses all the data).
    low, high: the `confidence` interval, clipped to [0, 1].
    se: the standard error used (sqrt of the floored two-way variance); NaN when undefined.
    df: degrees of freedom of the t reference (min(G_prompt, G_annotator) - 1; fractional for
    `few_clusters_interval`).
    n: judgments (rows not `decided`); n_prompts, n_annotators: clusters in each dimension
    (annotators of judgments only).
    variance: the components {"prompt", "annotator", "prompt_x_annotator", "two_way", "floor"}.
    n_decided: rows decided by construction; decided_share: their share of the total weight.
    """

    estimate: float
    low: float
    high: float
    se: float
    df: float
    n: int
    n_prompts: int
    n_annotators: int
    confidence: float
    method: str
    variance: dict[str, float] = field(default_factory=dict)
    n_decided: int = 0
    decided_share: float = 0.0


@dataclass(frozen=True)
class RobustWinRate:
    """The robust win rate f̂(k) = min over opponents of the per-opponent win rates.

    opponents: the opponent labels, in the order of `per_opponent`.
    worst_opponent: the label that attains the minimum estimate.
    critical_value: the simultaneous (sup-|t|) multiplier used for every opponent.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    critical_value: float
    worst_opponent: Any
    opponents: tuple[Any, ...]
    per_opponent: tuple[WinRateInterval, ...]
    n_resamples: int
    method: str = METHOD_ROBUST


# ---------------------------------------------------------------------------------------------
# The win rate of one (policy, k, opponent, m) cell
# ---------------------------------------------------------------------------------------------


def _one_way(codes: IntArray, scores: FloatArray, n_groups: int) -> FloatArray:
    """CGM one-way term c_G Σ_g S_g S_gᵀ with c_G = G/(G-1); scores (n, J) → (J, J)."""
    sums = np.zeros((n_groups, scores.shape[1]))
    np.add.at(sums, codes, scores)
    return (
        n_groups / (n_groups - 1) * (sums.T @ sums)
        if n_groups > 1
        else np.zeros((scores.shape[1],) * 2)
    )


def _intersection_codes(p: IntArray, a: IntArray) -> tuple[IntArray, int]:
    codes = np.unique(p.astype(np.int64) * (int(a.max()) + 1) + a, return_inverse=True)[
        1
    ].reshape(-1)
    return codes, int(codes.max()) + 1


def _annotator_part(
    p: IntArray, a: IntArray, human: npt.NDArray[np.bool_], scores: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The annotator and prompt∩annotator CGM terms over the judged rows (decided rows have no
    annotator: each is its own cluster in both dimensions, and those terms cancel, so they add
    variance through their prompt only)."""
    if not human.any():
        zero = np.zeros((scores.shape[1],) * 2)
        return zero, zero
    a_h = _recode(a[human])
    pa, g_pa = _intersection_codes(p[human], a_h)
    return (
        _one_way(a_h, scores[human], int(a_h.max()) + 1),
        _one_way(pa, scores[human], g_pa),
    )


def credit_variance_floor(total_weight: float, mean: float, spread: float) -> float:
    """The least variance a cell's mean is given: the credits' own variance, Agresti–Coull-shrunk.

    total_weight W = Σ w (the judgments, when every weight is 1); mean ȳ = Σ w y / W; spread
    s² = Σ w (y − ȳ)² / W, the credits' (weighted) variance about their mean. Four
    pseudo-credits, two at 0 and two at 1 (Agresti & Coull 1998, "Approximate is better than
    'exact' for interval estimation of binomial proportions", Am. Stat. 52(2)), are added to the
    credits; the floor is their second moment about the shrunk mean p̃ = (W ȳ + 2) / (W + 4),
    divided by W + 4:

        floor = [W s² + W (ȳ − p̃)² + 2 p̃² + 2 (1 − p̃)²] / (W + 4)²

    For 0/1 credits the bracket is (W + 4) p̃ (1 − p̃), so the floor is exactly Agresti–Coull's
    p̃(1 − p̃)/(W + 4), as before this function; for fractional credits (a shared text credits
    c_A / (c_A + c_B); an item decided by construction k / (k + m)) it is their own iid variance
    of the mean, which is smaller: the binomial variance overstated it, and bound the interval
    of most equilibrium-type cells (coverage ≈ 1.00 where 0.95 was promised; docs/benchmarks.md,
    "Interval coverage on fractional credits"). The pseudo-credits keep a cell whose credits are
    all equal (s² = 0: all 0, all 1, or all k/(k+m)) off a zero width, as before.

    `_cell` applies it to its rows, and `workers.stats.planning` to the credit variance it
    predicts (spread = dispersion · f (1 − f)), so the planner floors as the estimator does.
    """
    total = float(total_weight)
    shrunk = (total * mean + 2.0) / (total + 4.0)
    second = (
        total * spread
        + total * (mean - shrunk) ** 2
        + 2.0 * shrunk**2
        + 2.0 * (1.0 - shrunk) ** 2
    )
    return float(second / (total + 4.0) ** 2)


def _cell(
    y: FloatArray,
    p: IntArray,
    a: IntArray,
    confidence: float,
    w: FloatArray | None = None,
    decided: npt.NDArray[np.bool_] | None = None,
) -> WinRateInterval:
    w = np.ones(y.size) if w is None else w
    human = np.ones(y.size, dtype=bool) if decided is None else ~decided
    n, n_decided = int(human.sum()), int(y.size - human.sum())
    total = float(w.sum())
    estimate = float(w @ y / total)
    share = float(w[~human].sum() / total)
    p = _recode(p)
    g_p = int(p.max()) + 1
    g_a = int(np.unique(a[human]).size)
    if g_p < 2 or (n > 0 and g_a < 2):
        return WinRateInterval(
            estimate, 0.0, 1.0, math.nan, 0, n, g_p, g_a, confidence, METHOD_TOO_FEW,
            n_decided=n_decided, decided_share=share,
        )  # fmt: skip
    scores = (w * (y - estimate) / total)[:, None]
    v_p = float(_one_way(p, scores, g_p)[0, 0])
    v_a_m, v_pa_m = _annotator_part(p, a, human, scores)
    v_a, v_pa = float(v_a_m[0, 0]), float(v_pa_m[0, 0])
    floor = credit_variance_floor(
        total, estimate, float(w @ (y - estimate) ** 2) / total
    )
    two_way = v_p + v_a - v_pa
    variance = max(two_way, v_p, v_a, floor)
    # Only judgments have annotators; a cell of decided items alone varies by prompt only.
    df = (min(g_p, g_a) if n > 0 else g_p) - 1
    se = math.sqrt(variance)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return WinRateInterval(
        estimate=estimate,
        low=max(0.0, estimate - half),
        high=min(1.0, estimate + half),
        se=se,
        df=df,
        n=n,
        n_prompts=g_p,
        n_annotators=g_a,
        confidence=confidence,
        method=METHOD_CGM,
        variance={
            "prompt": v_p,
            "annotator": v_a,
            "prompt_x_annotator": v_pa,
            "two_way": two_way,
            "floor": floor,
        },
        n_decided=n_decided,
        decided_share=share,
    )


def win_rate_interval(
    credit: npt.ArrayLike,
    prompt_ids: npt.ArrayLike,
    annotator_ids: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    decided: npt.ArrayLike | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    rng: np.random.Generator | int | None = None,
) -> WinRateInterval:
    """Mean credit of one (policy, k, opponent, m) cell with an interval for crossed prompts and annotators.

    Parameters
    ----------
    credit : (n,) floats in [0, 1]
        The policy's credit per judgment (theory.md §1), excluded judgments already dropped.
    prompt_ids, annotator_ids : (n,) labels of any hashable dtype
        The prompt and the annotator of each judgment: the two crossed cluster dimensions.
    weights : (n,) positive floats, optional
        Row weights (default 1): the estimate is Σ w·credit / Σ w and the scores below are
        e_i = w_i (y_i - ȳ) / Σ w, with Σ w in place of n in the floor.
    decided : (n,) bools, optional
        Rows whose credit is fixed by construction (an item that shows one text): no person
        judged them, so they belong to their prompt's cluster but to no annotator (their
        annotator_ids are ignored). They count in the estimate and in the prompt variance; the
        annotator terms, n_annotators and the degrees of freedom use the judgments only (a
        cell of decided rows alone has df = G_prompt - 1).
    confidence : float in (0, 1)
        Two-sided coverage of the interval.
    n_resamples, rng :
        Validated and accepted so that the signature matches the resampling estimators of this
        module (`robust_win_rate_interval`); the interval here is analytic and draws nothing,
        so the same data always give the same interval.

    Returns
    -------
    WinRateInterval
        estimate = mean(credit) over all judgments; [low, high] clipped to [0, 1].

    Method
    ------
    The estimand is the win rate over the population of prompts *and* annotators that the study
    sampled from. A judgment's credit shares a prompt effect with every judgment of that prompt
    and an annotator effect with every judgment of that annotator, so the errors are correlated
    along two crossed dimensions. We use the two-way cluster-robust variance of Cameron, Gelbach
    & Miller (2011, "Robust inference with multiway clustering", JBES 29(2), eq. 2.9), for the
    mean with scores e_i = (y_i - ȳ)/n and cluster sums S_g = Σ_{i∈g} e_i:

        V_G   = G/(G-1) · Σ_g S_g²                 (G/(G-1): CGM §2.3 small-sample factor;
                                                     (n-1)/(n-K) = 1 for a mean)
        V_2w  = V_prompt + V_annotator - V_prompt∩annotator
        V     = max(V_2w, V_prompt, V_annotator, V_floor)
        V_floor = [Σ(y - p̃)² + 2p̃² + 2(1-p̃)²] / (n+4)²,  p̃ = (Σy + 2)/(n + 4)

    The floors are principled, not tuning: (i) under non-negative within-cluster correlation the
    variance of the mean is at least what either one-way clustering alone accounts for, and
    V_2w can come out below it or negative in small samples (CGM 2011 §2.3 discuss the
    non-positive case); (ii) V_floor (`credit_variance_floor`) is the credits' own i.i.d.
    variance of the mean with Agresti–Coull's (1998) four pseudo-credits, two at 0 and two at
    1: it keeps a cell whose credits are all equal (all 0, all 1, all k/(k+m)) or that has few
    clusters from a zero-width interval. For 0/1 credits it is Agresti–Coull's p̃(1-p̃)/(n+4);
    for fractional credits it is smaller, as their variance is (until issue #21 the binomial
    variance floored every cell, and bound 98% of equilibrium-type cells, whose intervals came
    out 1.7× the needed width). The interval is
    ȳ ± t_{df, (1+confidence)/2} · sqrt(V) with df = min(G_prompt, G_annotator) - 1, the
    reference distribution recommended for few clusters by Cameron & Miller (2015, "A
    practitioner's guide to cluster-robust inference", JHR 50(2), §VI.C and §VII.A) and
    analysed for two-way clustering by MacKinnon, Nielsen & Webb (2021, "Wild bootstrap and
    asymptotic inference with multiway clustering", JBES 39(2)).

    Why not the alternatives measured on this project's clustered design: an iid interval (what
    Chatbot Arena's bootstrap amounts to) ignores both correlations and covered ~75%; the
    pigeonhole bootstrap (Owen 2007, "The pigeonhole bootstrap", AoAS 1(2)) resamples prompts
    and annotators independently, which counts the residual variance up to three times, so it
    is conservative by construction (~98%: annotator money spent on width). Two-way CGM removes
    exactly that double counting through the - V_∩ term; the G/(G-1) factors and the t
    reference fix its known small-sample undercoverage (~93.5% without them). The coverage is
    checked in tests/test_analysis.py (slow simulation of 400 studies with prompt and annotator
    random effects).

    With fewer than 2 prompts or 2 annotators no variance across that dimension can be
    estimated; the result is then the whole [0, 1] with method METHOD_TOO_FEW.

    Examples
    --------
    >>> r = win_rate_interval([1, 0, 1, 1], ["p1", "p1", "p2", "p2"], [7, 8, 7, 8])
    >>> round(r.estimate, 2), r.low <= r.estimate <= r.high
    (0.75, True)
    """
    y, p, a, w, d, confidence, _ = _iv_win_rate(
        credit, prompt_ids, annotator_ids, confidence, n_resamples, weights, decided
    )
    np.random.default_rng(rng)  # validates rng (SPEC 7) without drawing
    return _cell(y, p, a, confidence, w, d)


# ---------------------------------------------------------------------------------------------
# Few clusters: 3-5 annotators (issue #11.6)
# ---------------------------------------------------------------------------------------------


def _few_clusters_df(cell: WinRateInterval, n_intersections: int) -> float:
    """Satterthwaite df of V = V_p + V_a - V_pa, each V_c at its upper confidence bound."""
    parts = cell.variance
    comps = [
        (parts["prompt"], cell.n_prompts - 1),
        (parts["annotator"], cell.n_annotators - 1),
        (parts["prompt_x_annotator"], n_intersections - 1),
    ]
    up = [
        v * d / stats.chi2.ppf(1 - FEW_CLUSTERS_DF_LEVEL, d) if d > 0 else 0.0
        for v, d in comps
    ]
    total = max(up[0] + up[1] - up[2], up[0], up[1])
    denom = sum(u * u / d for u, (_, d) in zip(up, comps, strict=True) if d > 0)
    return max(float(cell.df), total * total / denom if denom > 0 else float(cell.df))


def few_clusters_interval(
    credit: npt.ArrayLike,
    prompt_ids: npt.ArrayLike,
    annotator_ids: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    decided: npt.ArrayLike | None = None,
    confidence: float = 0.95,
) -> WinRateInterval:
    """`win_rate_interval` with degrees of freedom that do not waste few annotators.

    Same estimate, variance and standard error as `win_rate_interval`; only the t reference
    changes. With G_a = 3 annotators the usual df = min(G_prompt, G_annotator) - 1 = 2 gives
    t = 4.3 even when most of the variance comes from the prompts, which have many clusters.
    Here df is the Welch–Satterthwaite (1946) approximation for a sum of variance components,
    the small-sample device Bell & McCaffrey (2002) and Imbens & Kolesár (2016, "Robust
    standard errors in small samples", REStat 98(4)) recommend for few clusters:

        df = V⁺² / (V_p⁺²/(G_p - 1) + V_a⁺²/(G_a - 1) + V_pa⁺²/(G_pa - 1)),
        V⁺ = max(V_p⁺ + V_a⁺ - V_pa⁺, V_p⁺, V_a⁺),   V_c⁺ = V_c (G_c - 1) / χ²_{G_c-1, 0.25},

    never below min(G) - 1. The plug-in Satterthwaite df (V_c⁺ = V_c) is liberal with 2-4 df:
    a low draw of the annotator component makes df large exactly when the standard error is
    already too small (coverage 0.91 with 3 annotators of sd 0.6 on the logit scale). Evaluating
    each component at its 75% upper confidence bound (FEW_CLUSTERS_DF_LEVEL) in the df only is
    the conservative correction: among the levels 50/75/90% and none, checked on 1,000 studies
    per design (3-5 annotators, 40 prompts, about 1,600 judgments, annotator sd 0, 0.3, 0.6),
    75% was the only one that kept every design in 93-97%, with intervals 7-46% narrower than
    df = min(G) - 1 (docs/benchmarks.md, "Few clusters"). An unrestricted wild cluster
    bootstrap-t over annotators with Webb (2013) six-point weights covered only 82-93% in a
    smaller check (60 studies per design), so it is not used.

    Parameters and return as in `win_rate_interval` (its `method` is METHOD_FEW, `df` is
    fractional). Deterministic: the same data give the same interval. With fewer than 2
    clusters in a dimension it returns the whole [0, 1] (METHOD_TOO_FEW), as that does.
    """
    y, p, a, w, d, confidence, _ = _iv_win_rate(
        credit, prompt_ids, annotator_ids, confidence, 1, weights, decided
    )
    return _with_few_clusters_df(_cell(y, p, a, confidence, w, d), p, a, d)


def _with_few_clusters_df(
    cell: WinRateInterval, p: IntArray, a: IntArray, d: npt.NDArray[np.bool_]
) -> WinRateInterval:
    """`cell` (from `_cell` on these rows) with the conservative Satterthwaite df and its interval."""
    if cell.method == METHOD_TOO_FEW:
        return cell
    human = ~d
    n_pa = _intersection_codes(p[human], _recode(a[human]))[1] if human.any() else 0
    df = _few_clusters_df(cell, n_pa)
    half = float(stats.t.ppf(0.5 + cell.confidence / 2.0, df)) * cell.se
    return dataclasses.replace(
        cell,
        low=max(0.0, cell.estimate - half),
        high=min(1.0, cell.estimate + half),
        df=df,
        method=METHOD_FEW,
    )


def uses_few_clusters_interval(n_prompts: int, n_annotators: int) -> bool:
    """Whether a cell's interval should be `few_clusters_interval` rather than `win_rate_interval`.

    The rule of the results page: at most FEW_CLUSTERS (5) prompts or annotators, the range where
    `few_clusters_interval` was validated (93-97% coverage with 3-5 annotators, 7-46% narrower;
    docs/benchmarks.md "Few clusters"). Past it the two agree to within about 2%, and the
    usual min(G) - 1 df is the better-studied reference. (`few_clusters_warning` speaks below 5.)
    """
    return min(int(n_prompts), int(n_annotators)) <= FEW_CLUSTERS


def design_interval(
    credit: npt.ArrayLike,
    prompt_ids: npt.ArrayLike,
    annotator_ids: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    decided: npt.ArrayLike | None = None,
    confidence: float = 0.95,
) -> WinRateInterval:
    """`win_rate_interval`, or `few_clusters_interval` when `uses_few_clusters_interval` says so
    for the cell's own prompts and annotators (the interval of every cell on the results page)."""
    y, p, a, w, d, confidence, _ = _iv_win_rate(
        credit, prompt_ids, annotator_ids, confidence, 1, weights, decided
    )
    cell = _cell(y, p, a, confidence, w, d)
    if uses_few_clusters_interval(cell.n_prompts, cell.n_annotators):
        return _with_few_clusters_df(cell, p, a, d)
    return cell


def few_clusters_warning(n_prompts: int, n_annotators: int) -> str | None:
    """A sentence for the results page when a design has too few clusters to say much, else None.

    With G clusters in a dimension, the variance along it is estimated from G - 1 df; below
    FEW_CLUSTERS (5: under 4 df) any honest interval is wide and leans on its assumptions
    (normal cluster effects, the Satterthwaite approximation), so a narrow-looking interval
    should not be trusted and a reader should know why a wide one is wide.
    """
    problems = [
        f"{count} {name}{'s' if count != 1 else ''}"
        for name, count in (
            ("prompt", int(n_prompts)),
            ("annotator", int(n_annotators)),
        )
        if count < FEW_CLUSTERS
    ]
    if not problems:
        return None
    return (
        f"Only {' and '.join(problems)}: fewer than {FEW_CLUSTERS} clusters leave under 4 degrees "
        "of freedom for that source of variation, so these intervals are wide and rest on "
        "distributional assumptions. Add prompts or annotators before drawing conclusions."
    )


# ---------------------------------------------------------------------------------------------
# The robust win rate f̂(k): min over opponents
# ---------------------------------------------------------------------------------------------


def _joint_correlation(
    y: FloatArray,
    p: IntArray,
    a: IntArray,
    o: IntArray,
    cells: list[WinRateInterval],
    w: FloatArray,
    decided: npt.NDArray[np.bool_],
) -> FloatArray:
    """Correlation of the J opponent means from the two-way cluster-robust covariance (J, J).

    Score of row i for opponent j: w_i (y_i - ȳ_j) / W_j if i belongs to opponent j, else 0
    (W_j: the opponent's total weight). The opponents share prompts and annotators, so their
    estimates are correlated. Decided rows enter the prompt term only, as in `_cell`.
    """
    n_opp = len(cells)
    means = np.array([c.estimate for c in cells])
    totals = np.bincount(o, weights=w, minlength=n_opp)
    scores = np.zeros((y.size, n_opp))
    scores[np.arange(y.size), o] = w * (y - means[o]) / totals[o]
    v_a, v_pa = _annotator_part(p, a, ~decided, scores)
    cov = _one_way(p, scores, int(p.max()) + 1) + v_a - v_pa
    values, vectors = np.linalg.eigh(
        (cov + cov.T) / 2
    )  # nearest PSD matrix (CGM 2011 §2.3)
    cov = (vectors * np.clip(values, 0, None)) @ vectors.T
    sd = np.sqrt(np.diag(cov))
    ok = sd > 0
    corr = np.eye(n_opp)
    corr[np.ix_(ok, ok)] = cov[np.ix_(ok, ok)] / np.outer(sd[ok], sd[ok])
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def robust_win_rate_interval(
    credit: npt.ArrayLike,
    prompt_ids: npt.ArrayLike,
    annotator_ids: npt.ArrayLike,
    opponent_ids: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    decided: npt.ArrayLike | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    rng: np.random.Generator | int | None = None,
    few_clusters: bool = False,
) -> RobustWinRate:
    """f̂(k) = min over opponents of the opponent win rates, with a conservative interval.

    Parameters
    ----------
    credit, prompt_ids, annotator_ids : (n,) as in `win_rate_interval`
        All judgments of one (policy, k), over every opponent.
    opponent_ids : (n,) labels
        The opponent (label and m) of each judgment.
    weights, decided : (n,), optional
        As in `win_rate_interval`, per row.
    confidence : float in (0, 1)
    n_resamples : int
        Draws used to find the simultaneous critical value.
    rng : numpy Generator, seed or None
    few_clusters : bool
        With True, each opponent's cell for which `uses_few_clusters_interval` holds takes the
        conservative Satterthwaite df of `few_clusters_interval` (same estimate and standard
        error), and the band's df is the smallest of the opponents' df as before.

    Method
    ------
    The plug-in min_j θ̂_j is biased low (a min of noisy estimates); taking the min within each
    bootstrap draw inherits that bias and does not give valid coverage when several opponents
    are close (the "non-differentiable functional" problem; Andrews 2000, Econometrica 68(2);
    Hirano & Porter 2012, Econometrica 80(4)). Instead we build a simultaneous band: if every
    θ_j lies in [L_j, U_j] at once, then min_j θ_j lies in [min_j L_j, min_j U_j]. So with a
    band of joint coverage `confidence` the interval for f(k) has at least that coverage, for
    any configuration of the opponents, close or not. The band is the sup-t band of Montiel
    Olea & Plagborg-Møller (2019, "Simultaneous confidence bands", J. Appl. Econometrics
    34(1)): θ̂_j ± c·se_j, with se_j the per-opponent two-way CGM standard error of
    `win_rate_interval` and c the `confidence` quantile of max_j |T_j|, T multivariate t with
    the opponents' two-way cluster-robust correlation (they share prompts and annotators) and
    df = the smallest per-opponent df, estimated from `n_resamples` draws. With one opponent c
    is the t quantile, and the result equals `win_rate_interval`. It is conservative (one-sided
    use of a two-sided band), which we prefer for a headline claim such as "f(k) ≥ k/(k+1)".
    """
    y, p, a, w, d, confidence, n_resamples = _iv_win_rate(
        credit, prompt_ids, annotator_ids, confidence, n_resamples, weights, decided
    )
    labels_arr = _check_1d(opponent_ids, "opponent_ids")
    if labels_arr.shape[0] != y.size:
        raise ValueError(
            f"opponent_ids must have the same length as credit ({y.size}), got {labels_arr.shape[0]}"
        )
    labels, o = np.unique(labels_arr, return_inverse=True)
    o = o.reshape(-1)
    generator = np.random.default_rng(rng)
    cells = []
    for j in range(labels.size):
        mask = o == j
        cell = _cell(y[mask], p[mask], a[mask], confidence, w[mask], d[mask])
        if few_clusters and uses_few_clusters_interval(
            cell.n_prompts, cell.n_annotators
        ):
            cell = _with_few_clusters_df(cell, p[mask], a[mask], d[mask])
        cells.append(cell)
    if any(c.method == METHOD_TOO_FEW for c in cells):
        crit = math.inf
    elif len(cells) == 1:
        crit = float(stats.t.ppf(0.5 + confidence / 2.0, cells[0].df))
    else:
        corr = _joint_correlation(y, p, a, o, cells, w, d)
        df = min(c.df for c in cells)
        z = generator.multivariate_normal(
            np.zeros(len(cells)), corr, size=n_resamples, method="eigh"
        )
        t = z / np.sqrt(generator.chisquare(df, size=(n_resamples, 1)) / df)
        crit = float(np.quantile(np.abs(t).max(axis=1), confidence))
    lows = [
        0.0 if not math.isfinite(crit) else max(0.0, c.estimate - crit * c.se)
        for c in cells
    ]
    highs = [
        1.0 if not math.isfinite(crit) else min(1.0, c.estimate + crit * c.se)
        for c in cells
    ]
    worst = int(np.argmin([c.estimate for c in cells]))
    return RobustWinRate(
        estimate=cells[worst].estimate,
        low=min(lows),
        high=min(highs),
        confidence=confidence,
        critical_value=crit,
        worst_opponent=labels[worst].item()
        if hasattr(labels[worst], "item")
        else labels[worst],
        opponents=tuple(v.item() if hasattr(v, "item") else v for v in labels),
        per_opponent=tuple(cells),
        n_resamples=n_resamples,
    )
