"""Plan a study before paying for it: predicted interval widths and the sample size a target needs.

Pure NumPy/SciPy (no Django), next to `workers/stats/intervals.py`, whose estimator it predicts: the
two-way cluster-robust (CGM) interval of one (policy, k, opponent) cell, ȳ ± t_{df}·√V with
df = min(G_prompt, G_annotator) − 1, and the simultaneous band of the robust f̂(k) (the min over
a policy's opponents at one k), θ̂_j ± c·se_j with c the sup-|t| critical value. The model and its
assumptions are in docs/planning.md; in short, a judgment's credit is

    y = f_cell + p_prompt + q_item + a_annotator + e,     independent zero-mean effects,

with Var(y) = σ² = dispersion · f(1 − f) split into shares ρ_prompt, ρ_item, ρ_annotator and the
residual 1 − Σρ (σ² = f(1 − f) for a pick between two texts, the most a [0, 1] credit with mean f
can vary). For a cell of P prompts, R items per prompt (replicates) and A annotations per item,
n = P·R·A judgments, and annotators who each judge L regular items spread over C cells:

    V = σ² [ ρ_prompt / P + ρ_item / (P R) + ρ_annotator (1 + (L − 1)/C) / n + ρ_residual / n ]

(the variance of a mean with crossed random effects, Σ_g n_g² / n² per dimension; an annotator
lands on a given cell with probability 1/C per item). The CGM estimator is unbiased for V up to
its small-sample factors, so the predicted half-width is t_{df, (1+confidence)/2} · √V, floored
as the estimator floors it. Validated by simulation through `workers.stats.intervals` itself
(tests/test_planning.py, bench/planning_validation.py).

Public API
----------
VarianceComponents (the design and its cells: `study_design.py`)
literature_components() -> VarianceComponents
estimate_components(credit, prompt_ids, annotator_ids, *, cell_ids, item_ids, fallback, min_pairs)
    -> VarianceComponents
predict_widths(design, components, *, cell_means, confidence) -> DesignWidths
plan_sample_size(design, components, *, half_width, target, cell_means, confidence, price, annotation_grid)
    -> SampleSizePlan
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

from ._validation import _is_int, _is_real
from .intervals import credit_variance_floor
from .study_design import ADVERSARY, CellKey, Design

__all__ = [
    "Alternative",
    "CellWidth",
    "DesignWidths",
    "RobustWidth",
    "SampleSizePlan",
    "VarianceComponents",
    "estimate_components",
    "literature_components",
    "plan_sample_size",
    "predict_widths",
    "sup_t_critical_value",
]

#: Sized for: the headline (adversary cells, default) or the conservative band (old names accepted).
TARGETS = ("headline", "band")
TARGET_ALIASES = {"cell": "headline", "robust": "band"}
MAX_PROMPTS = 1_000_000

# Agreement of two people on the same pairwise comparison of model outputs, as published (see
# docs/planning.md): InstructGPT's labelers 72.6% (Ouyang et al. 2022), MT-Bench experts 63%
# with ties allowed and 81% without (Zheng et al. 2023), AlpacaFarm's crowd 65.7%
# (Dubois et al. 2023). For a binary pick with mean ½ the agreement α fixes the between-item
# share of the variance: ρ_item = 2α − 1. We take α = 0.65, the middle of the crowd figures.
LITERATURE_AGREEMENT = 0.65
# No published estimate of an annotator's consistent lean towards one decoding policy exists that
# we know of; 0.05 is an assumption (docs/planning.md shows how the plan moves with it).
LITERATURE_ANNOTATOR_SHARE = 0.05


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceComponents:
    """How the variance of one judgment's credit splits, as shares of σ² = dispersion · f(1 − f).

    prompt: effect shared by every judgment of a prompt in a cell (with one item per prompt and
        cell, the item's own effect is in here too); item: effect of one item beyond its prompt
        (matters only with replicates > 1); annotator: a person's lean, shared by their judgments
        in a cell; the residual 1 − prompt − item − annotator is the pick's own noise.
    dispersion: Var(y) / (f(1 − f)); 1 for picks between two texts, below 1 when credits are
        fractional (texts drawn by both sides) or decided.
    source: where the numbers come from, for the page; n_judgments and pairs: the data behind an
        estimate (pairs per component: the judgment pairs that carried it).
    """

    prompt: float
    item: float = 0.0
    annotator: float = 0.0
    dispersion: float = 1.0
    source: str = "given"
    n_judgments: int = 0
    pairs: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("prompt", "item", "annotator"):
            value = getattr(self, name)
            if not _is_real(value) or not 0 <= value <= 1:
                raise ValueError(
                    f"{name} share must be a number in [0, 1], got {value!r}"
                )
        if self.prompt + self.item + self.annotator > 1 + 1e-9:
            raise ValueError(
                "the prompt, item and annotator shares must add up to at most 1"
            )
        if not _is_real(self.dispersion) or not 0 < self.dispersion <= 1:
            raise ValueError(f"dispersion must be in (0, 1], got {self.dispersion!r}")

    @property
    def residual(self) -> float:
        return max(0.0, 1.0 - self.prompt - self.item - self.annotator)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellWidth:
    """The predicted interval of one cell: half_width = t_{df} · se (inf when df < 1)."""

    cell: CellKey
    mean: float
    judgments: int
    annotators: float  # expected distinct annotators in the cell
    df: int
    se: float
    half_width: float


@dataclass(frozen=True)
class RobustWidth:
    """The predicted simultaneous band of f̂(k) for one policy and k: critical_value · max se."""

    policy: str
    k: int
    opponents: tuple[str, ...]
    df: int
    critical_value: float
    half_width: float


@dataclass(frozen=True)
class DesignWidths:
    design: Design
    components: VarianceComponents
    confidence: float
    cells: tuple[CellWidth, ...]
    robust: tuple[RobustWidth, ...]

    def headline(self, target: str = "headline") -> float:
        """The widest half-width of the target: the adversary cells, or the conservative bands."""
        if TARGET_ALIASES.get(target, target) == "band":
            return max(r.half_width for r in self.robust)
        heads = [c.half_width for c in self.cells if c.cell.opponent == ADVERSARY] or [
            c.half_width for c in self.cells
        ]
        return max(heads)


@dataclass(frozen=True)
class Alternative:
    """The smallest number of prompts that reaches the target with A annotations per item."""

    annotations_per_item: int
    prompts: int
    participants: int
    judgments: int
    cost: float | None
    half_width: float


@dataclass(frozen=True)
class SampleSizePlan:
    """current: the design as it stands; recommended: the same design with the fewest prompts that
    reach the target (None if even MAX_PROMPTS don't); alternatives: the same for other numbers of
    annotations per item, cheapest first; prompts_floor: fewer prompts than this can't reach the
    target with any number of annotators (the prompt variance alone is too large)."""

    target_half_width: float
    target: str
    price: float | None
    current: DesignWidths
    current_cost: float | None
    recommended: DesignWidths | None
    recommended_cost: float | None
    alternatives: tuple[Alternative, ...]
    prompts_floor: int | None


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _check_confidence(confidence: Any) -> float:
    if not _is_real(confidence) or not 0 < confidence < 1:
        raise ValueError(
            f"confidence must be a number strictly between 0 and 1, got {confidence!r}"
        )
    return float(confidence)


def _check_means(
    design: Design, cell_means: Mapping[Any, float | None] | None
) -> dict[CellKey, float]:
    means = {}
    given = dict(cell_means or {})
    for cell in design.cells:
        value = given.get(cell, given.get((cell.policy, cell.k, cell.opponent), 0.5))
        if value is None:
            value = 0.5
        if not _is_real(value) or not 0 <= value <= 1:
            raise ValueError(f"cell mean of {cell} must be in [0, 1], got {value!r}")
        means[cell] = float(value)
    return means


def _iv_predict(
    design: Any, components: Any, cell_means: Any, confidence: Any
) -> tuple[dict[CellKey, float], float]:
    if not isinstance(design, Design):
        raise TypeError(
            f"design must be a study_design.Design, got {type(design).__name__}"
        )
    if not isinstance(components, VarianceComponents):
        raise TypeError(
            f"components must be planning.VarianceComponents, got {type(components).__name__}"
        )
    return _check_means(design, cell_means), _check_confidence(confidence)


def _iv_plan(
    half_width: Any, target: Any, price: Any, annotation_grid: Any
) -> tuple[float, str, float | None, tuple[int, ...]]:
    if not _is_real(half_width) or not 0 < half_width <= 0.5:
        raise ValueError(f"half_width must be in (0, 0.5], got {half_width!r}")
    target = TARGET_ALIASES.get(target, target) if isinstance(target, str) else target
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if price is not None and (not _is_real(price) or price < 0):
        raise ValueError(f"price must be a non-negative number or None, got {price!r}")
    grid = tuple(annotation_grid)
    if not grid or not all(_is_int(a) and a >= 1 for a in grid):
        raise ValueError(
            f"annotation_grid must hold positive integers, got {annotation_grid!r}"
        )
    return float(half_width), target, None if price is None else float(price), grid


# ---------------------------------------------------------------------------------------------
# Variance components: the literature's defaults, or estimated from judgments
# ---------------------------------------------------------------------------------------------


def literature_components() -> VarianceComponents:
    """Defaults for a study with no pilot yet (docs/planning.md, "Default variance components").

    ρ_prompt = 2α − 1 with α = 0.65, the published agreement of two crowd annotators on one
    pairwise comparison (all of it put on the prompt, which is conservative: replicates can't
    average it away); ρ_annotator = 0.05 (an assumption); binary picks (dispersion 1).
    """
    return VarianceComponents(
        prompt=2 * LITERATURE_AGREEMENT - 1,
        item=0.0,
        annotator=LITERATURE_ANNOTATOR_SHARE,
        dispersion=1.0,
        source=f"literature defaults (pairwise agreement {LITERATURE_AGREEMENT:.0%}, annotator share "
        f"{LITERATURE_ANNOTATOR_SHARE:g})",
    )


def _pair_sum(
    codes: npt.NDArray[np.int64], e: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """Σ over groups of (Σ_g e)² and of n_g²: the sums over ordered pairs within groups, self-pairs included."""
    _, inverse = np.unique(codes, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.bincount(inverse, weights=e)
    counts = np.bincount(inverse).astype(np.float64)
    return float(sums @ sums), float(counts @ counts)


def _codes(*arrays: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """One integer code per distinct combination of the given integer codes."""
    stacked = np.stack(arrays, axis=1)
    return (
        np.unique(stacked, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    )


def _as_codes(x: Any, name: str, n: int) -> npt.NDArray[np.int64]:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must be a 1-D array of length {n}, got shape {arr.shape}"
        )
    if arr.dtype == object and any(v is None for v in arr):
        raise ValueError(f"{name} must not contain None")
    return np.unique(arr, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _iv_estimate(
    credit: Any,
    prompt_ids: Any,
    annotator_ids: Any,
    cell_ids: Any,
    item_ids: Any,
    fallback: Any,
    min_pairs: Any,
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64] | None,
]:
    y = np.asarray(credit)
    if y.ndim != 1 or y.size < 2:
        raise ValueError(
            f"credit must be a 1-D array of at least 2 judgments, got shape {y.shape}"
        )
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)) or (y < 0).any() or (y > 1).any():
        raise ValueError("credit must hold finite values in [0, 1]")
    n = y.size
    p = _as_codes(prompt_ids, "prompt_ids", n)
    a = _as_codes(annotator_ids, "annotator_ids", n)
    c = (
        np.zeros(n, np.int64)
        if cell_ids is None
        else _as_codes(cell_ids, "cell_ids", n)
    )
    i = None if item_ids is None else _as_codes(item_ids, "item_ids", n)
    if fallback is not None and not isinstance(fallback, VarianceComponents):
        raise TypeError("fallback must be VarianceComponents or None")
    if not _is_int(min_pairs) or min_pairs < 1:
        raise ValueError(f"min_pairs must be a positive integer, got {min_pairs!r}")
    return y, p, a, c, i


def estimate_components(
    credit: npt.ArrayLike,
    prompt_ids: npt.ArrayLike,
    annotator_ids: npt.ArrayLike,
    *,
    cell_ids: npt.ArrayLike | None = None,
    item_ids: npt.ArrayLike | None = None,
    fallback: VarianceComponents | None = None,
    min_pairs: int = 30,
) -> VarianceComponents:
    """Variance components from a pilot's (or a study's) judgments, by moments of judgment pairs.

    Parameters
    ----------
    credit : (n,) floats in [0, 1], the policy's credit per judgment (excluded ones dropped).
    prompt_ids, annotator_ids : (n,) labels of the prompt and the annotator of each judgment.
    cell_ids : (n,) labels of the (policy, k, opponent) cell, optional: effects are measured
        within cells, around each cell's own mean (default: one cell).
    item_ids : (n,) labels of the comparison item, optional: separates the item's effect from
        its prompt's (only identifiable with replicates > 1).
    fallback : components to use for a share whose pairs number fewer than `min_pairs` (a pilot
        where annotators rarely meet a cell twice says little about their lean); None keeps the
        estimate whatever the count.

    Method
    ------
    With e = y − ȳ_cell, the mean product of e over pairs of judgments of one cell that share
    exactly one factor estimates that factor's variance (a moment estimator for crossed random
    effects, as in Gao & Owen 2017, "Efficient moment calculations for variance components in
    large unbalanced crossed random effects models", EJS 11(1)): pairs on one prompt with other
    annotators (and other items, when item ids are given) give σ²_prompt, pairs on one item
    σ²_prompt + σ²_item, pairs of one annotator on other prompts σ²_annotator; the mean of e²
    (with n/(n − cells) for the fitted means) is σ². Sums over pairs come from group sums,
    Σ_{i≠j∈g} e_i e_j = (Σ_g e)² − Σ_g e², in O(n). Negative moments are set to 0. Centring at
    the estimated mean biases each product down by about Var(ȳ_cell), small next to the
    components once a cell has tens of prompts.
    """
    y, p, a, c, i = _iv_estimate(
        credit, prompt_ids, annotator_ids, cell_ids, item_ids, fallback, min_pairs
    )
    if i is not None and np.unique(_codes(c, i)).size == np.unique(_codes(c, p)).size:
        i = None  # one item per prompt and cell: the item's effect can only be counted with its prompt's
    n, n_cells = y.size, int(c.max()) + 1
    means = np.bincount(c, weights=y) / np.bincount(c)
    e = y - means[c]
    squares = float(e @ e)
    total = squares / max(n - n_cells, 1)
    binomial = float(np.sum(means[c] * (1 - means[c]))) / max(n - n_cells, 1)
    s_p, n_p = _pair_sum(_codes(c, p), e)
    s_a, n_a = _pair_sum(_codes(c, a), e)
    s_pa, n_pa = _pair_sum(_codes(c, p, a), e)
    moments: dict[str, float] = {}
    pairs: dict[str, int] = {}
    if i is not None:
        s_i, n_i = _pair_sum(_codes(c, i), e)
        pairs["item"] = int(n_i - n)
        moments["item"] = (s_i - squares) / pairs["item"] if pairs["item"] else math.nan
        pairs["prompt"] = int(n_p - n_pa - (n_i - n))
        moments["prompt"] = (
            (s_p - s_pa - (s_i - squares)) / pairs["prompt"]
            if pairs["prompt"]
            else math.nan
        )
    else:
        pairs["prompt"] = int(n_p - n_pa)
        moments["prompt"] = (
            (s_p - s_pa) / pairs["prompt"] if pairs["prompt"] else math.nan
        )
    pairs["annotator"] = int(n_a - n_pa)
    moments["annotator"] = (
        (s_a - s_pa) / pairs["annotator"] if pairs["annotator"] else math.nan
    )
    return _shares(moments, pairs, total, binomial, n, fallback, min_pairs)


def _shares(
    moments: dict[str, float],
    pairs: dict[str, int],
    total: float,
    binomial: float,
    n: int,
    fallback: VarianceComponents | None,
    min_pairs: int,
) -> VarianceComponents:
    """Moments → shares of the total, with the fallback where pairs are too few."""
    prompt = (
        max(moments["prompt"], 0.0) if math.isfinite(moments["prompt"]) else math.nan
    )
    item_var = moments.get("item", math.nan)
    item = (
        max(item_var - (prompt if math.isfinite(prompt) else 0.0), 0.0)
        if math.isfinite(item_var)
        else math.nan
    )
    annotator = (
        max(moments["annotator"], 0.0)
        if math.isfinite(moments["annotator"])
        else math.nan
    )
    shares = {
        name: v / total if total > 0 else 0.0
        for name, v in {"prompt": prompt, "item": item, "annotator": annotator}.items()
    }
    notes = []
    for name in ("prompt", "annotator", "item"):
        few = pairs.get(name, 0) < min_pairs
        if name not in pairs and name == "item":
            shares["item"] = 0.0
            continue
        if (few or not math.isfinite(shares[name])) and fallback is not None:
            shares[name] = getattr(fallback, name)
            notes.append(
                f"{name} share: only {pairs.get(name, 0)} pairs, so the fallback's {shares[name]:.3g}"
            )
        elif not math.isfinite(shares[name]):
            shares[name] = 0.0
    scale = min(
        1.0, 1.0 / max(sum(shares.values()), 1e-12)
    )  # keep the shares summing to ≤ 1
    dispersion = min(1.0, total / binomial) if binomial > 0 else 1.0
    return VarianceComponents(
        prompt=shares["prompt"] * scale,
        item=shares["item"] * scale,
        annotator=shares["annotator"] * scale,
        dispersion=max(dispersion, 1e-6),
        source=f"estimated from {n} judgments",
        n_judgments=n,
        pairs=pairs,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------


def _cell_width(
    design: Design,
    comp: VarianceComponents,
    cell: CellKey,
    mean: float,
    confidence: float,
) -> CellWidth:
    """The predicted CGM interval of one cell (module docstring: V, df)."""
    n_cells = len(design.cells)
    pr = design.prompts * design.replicates
    n = pr * design.annotations_per_item
    regular = design.regular_items / (design.regular_items + design.attention_items)
    per_person = (
        design.items_per_participant * regular
    )  # regular judgments per annotator, L
    sigma2 = comp.dispersion * mean * (1 - mean)
    variance = sigma2 * (
        comp.prompt / design.prompts
        + comp.item / pr
        + comp.annotator * (1 + (per_person - 1) / n_cells) / n
        + comp.residual / n
    )
    variance = max(variance, credit_variance_floor(n, mean, sigma2))  # as _cell floors
    # Expected distinct annotators: each of the study's participants meets the cell at least once.
    annotators = min(
        float(n),
        design.participants * -math.expm1(per_person * math.log1p(-1 / n_cells))
        if n_cells > 1
        else float(design.participants),
    )
    df = min(design.prompts, round(annotators)) - 1
    se = math.sqrt(variance)
    half = _t_quantile(df, confidence) * se if df >= 1 else math.inf
    return CellWidth(cell, mean, n, annotators, df, se, half)


@functools.cache
def _legendre_nodes() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    return np.polynomial.legendre.leggauss(256)


@functools.lru_cache(maxsize=4096)
def _t_quantile(df: int, confidence: float) -> float:
    return float(stats.t.ppf(0.5 + confidence / 2, df))


@functools.lru_cache(maxsize=4096)
def sup_t_critical_value(n_opponents: int, df: int, confidence: float) -> float:
    """The `confidence` quantile of max_j |T_j| for J t-statistics with independent numerators
    and one shared χ²_df denominator: P(max ≤ c) = E_s[(2Φ(c s) − 1)^J], s = √(χ²_df / df).

    `intervals.robust_win_rate_interval` simulates this quantile with the opponents' estimated
    correlation; by Šidák's inequality (Šidák 1967, JASA 62(318)) independence gives the largest
    critical value of any correlation, so the prediction is conservative. J = 1 gives the t quantile.
    """
    if not _is_int(n_opponents) or n_opponents < 1:
        raise ValueError(f"n_opponents must be a positive integer, got {n_opponents!r}")
    if not _is_int(df) or df < 1:
        return math.inf
    confidence = _check_confidence(confidence)
    if n_opponents == 1:
        return float(stats.t.ppf(0.5 + confidence / 2, df))
    # E over s on the quantile scale (u = F_χ²(x)), with Gauss–Legendre nodes: smooth, vectorised.
    nodes, weights = _legendre_nodes()
    s = np.sqrt(stats.chi2.ppf((nodes + 1) / 2, df) / df)

    def coverage(c: float) -> float:
        return float(weights @ (2 * stats.norm.cdf(c * s) - 1) ** n_opponents) / 2

    upper = (
        float(stats.t.ppf(1 - (1 - confidence) / (2 * n_opponents), df)) + 1.0
    )  # Bonferroni + margin
    return float(
        optimize.brentq(lambda c: coverage(c) - confidence, 0.0, upper, xtol=1e-6)
    )


def predict_widths(
    design: Design,
    components: VarianceComponents,
    *,
    cell_means: Mapping[Any, float | None] | None = None,
    confidence: float = 0.95,
) -> DesignWidths:
    """The predicted half-width of every cell's interval and of every f̂(k) band of a design.

    cell_means: the expected credit per cell (a CellKey or a (policy, k, opponent) tuple), for
    example the population model's predicted win rates; missing cells take ½, where a binary
    credit varies most (conservative).
    """
    means, confidence = _iv_predict(design, components, cell_means, confidence)
    cells = tuple(
        _cell_width(design, components, cell, means[cell], confidence)
        for cell in design.cells
    )
    robust = []
    for policy in design.policies:
        for k in design.k_values:
            members = [c for c in cells if c.cell.policy == policy and c.cell.k == k]
            df = min(c.df for c in members)
            crit = sup_t_critical_value(len(members), df, confidence)
            half = (
                crit * max(c.se for c in members) if math.isfinite(crit) else math.inf
            )
            robust.append(
                RobustWidth(
                    policy, k, tuple(c.cell.opponent for c in members), df, crit, half
                )
            )
    return DesignWidths(design, components, confidence, cells, tuple(robust))


def _smallest_prompts(
    design: Design, fits: Callable[[Design], bool], lower: int = 2
) -> int | None:
    """The smallest prompt count at which fits(design with it) holds (monotone), or None."""

    def ok(p: int) -> bool:
        return fits(replace(design, prompts=p))

    high = max(lower, 2)
    while not ok(high):
        if high >= MAX_PROMPTS:
            return None
        high = min(MAX_PROMPTS, high * 2)
    low = max(lower, high // 2)
    if ok(low):
        return low
    while high - low > 1:  # invariant: not ok(low), ok(high)
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return high


def plan_sample_size(
    design: Design,
    components: VarianceComponents,
    *,
    half_width: float,
    target: str = "headline",
    cell_means: Mapping[Any, float | None] | None = None,
    confidence: float = 0.95,
    price: float | None = None,
    annotation_grid: Iterable[int] = (1, 2, 3, 5, 10),
) -> SampleSizePlan:
    """The fewest prompts (and so participants) that bring every target interval to ±half_width.

    target: "headline" (default) for the adversary cells, the headline f̂(k) that the results page
    plots; "band" for the conservative band, the simultaneous band of the min over every opponent
    (30-70% more prompts; "cell" and "robust" are their old names). The recommended design keeps the
    study's annotations per item and items per participant and grows the prompts; the
    alternatives do the same for each number of annotations per item in `annotation_grid`,
    cheapest first. Participants = ⌈judgments / items per participant⌉, cost = participants ·
    price (the researcher's price per participant; platform fees not included).
    """
    half_width, target, price, grid = _iv_plan(
        half_width, target, price, annotation_grid
    )
    means, confidence = _iv_predict(design, components, cell_means, confidence)

    def widths(d: Design) -> DesignWidths:
        return predict_widths(d, components, cell_means=means, confidence=confidence)

    def fits(d: Design) -> bool:
        return widths(d).headline(target) <= half_width

    def cost(d: Design) -> float | None:
        return None if price is None else d.participants * price

    current = widths(design)
    best = _smallest_prompts(design, fits)
    recommended = None if best is None else widths(replace(design, prompts=best))
    alternatives = []
    for a in sorted(set(grid) | {design.annotations_per_item}):
        d = replace(design, annotations_per_item=a)
        p = _smallest_prompts(d, fits)
        if p is not None:
            d = replace(d, prompts=p)
            h = widths(d).headline(target)
            alternatives.append(
                Alternative(a, p, d.participants, d.judgments, cost(d), h)
            )
    alternatives.sort(key=lambda alt: (alt.participants, alt.prompts))  # cheapest first
    return SampleSizePlan(
        target_half_width=half_width,
        target=target,
        price=price,
        current=current,
        current_cost=cost(design),
        recommended=recommended,
        recommended_cost=None if recommended is None else cost(recommended.design),
        alternatives=tuple(alternatives),
        prompts_floor=_prompts_floor(
            design, components, means, half_width, target, confidence
        ),
    )


def _prompts_floor(
    design: Design,
    components: VarianceComponents,
    means: dict[CellKey, float],
    half_width: float,
    target: str,
    confidence: float,
) -> int | None:
    """Fewest prompts that could reach the target with unlimited annotators (prompt variance only)."""
    # Many annotations per item, each annotator judging one item: the prompt term alone remains.
    saturated = replace(design, annotations_per_item=10_000, items_per_participant=1)
    only_prompts = replace(components, annotator=0.0)

    def fits(d: Design) -> bool:
        w = predict_widths(d, only_prompts, cell_means=means, confidence=confidence)
        return w.headline(target) <= half_width

    return _smallest_prompts(saturated, fits)
