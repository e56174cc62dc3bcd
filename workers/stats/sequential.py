"""Anytime-valid intervals and stopping rules: watch a study after every judgment and stop honestly.

Pure NumPy/SciPy (no Django). The fixed-time interval of `intervals.py` is valid at one moment
chosen before the data; a researcher who looks at the results page after every judgment and stops
"when it looks significant" makes a false finding far more often than α. A *confidence sequence*
(CS) is a sequence of intervals C_1, C_2, … with P(∃t: θ ∉ C_t) ≤ α: it may be watched at every
moment and the study stopped at any data-dependent time τ, and θ ∈ C_τ still holds with
probability ≥ 1 − α.

We use the asymptotic confidence sequence of Waudby-Smith, Arnold, Wu, Howard & Ramdas (2024,
"Time-uniform central limit theory and asymptotic confidence sequences", Ann. Statist. 52(6),
Theorem 2.2): with units X_1, X_2, … i.i.d. with mean θ and finite variance (slightly more than two
moments), μ̂_t their mean and σ̂²_t their variance,

    C_t = μ̂_t ± sqrt( 2 (t σ̂²_t ρ² + 1) / (t² ρ²) · log( sqrt(t σ̂²_t ρ² + 1) / α ) )

is a two-sided (1 − α) asymptotic CS: the Robbins (1970) normal-mixture boundary of a Gaussian
random walk, with σ̂_t in place of σ. ρ > 0 is fixed before the data and sets the time at which the
CS is tightest: ρ² = (−2 log α + log(1 − 2 log α)) / (t* σ²) minimises the width at t = t*
(Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences", Ann. Statist. 49(2), eq. (14)); we tune it at the planned number of units t* with the
planned σ (`tuned_rho`), so it is pre-registered, never data-dependent.

**Clustering.** Credits are not i.i.d.: judgments of one prompt share its effect (and annotators
their lean). The units here are *prompt means*: X_i = the mean credit of prompt i's judgments in a
cell (or, for a comparison, the difference of two policies' prompt means, paired by prompt). Prompts
are sampled i.i.d. from the study's prompt universe, so their means are i.i.d. whatever the
correlation inside a prompt, and the theorem applies to them as stated. The alternative, the
two-way cluster-robust variance in place of σ̂² with t = judgments, has no time-uniform theory that
we know of (the CLT it rests on is for a fixed number of clusters growing, not a martingale), so we
did not use it. What this assumes: (i) a prompt enters the sequence when all its judgments in the
cell are in (the CS only changes then, so watching it after every judgment is watching it after
every completed prompt, which is what the bench does); (ii) every prompt gets the same number of
judgments (otherwise the mean of prompt means is a different, prompt-weighted estimand than the
judgment mean); (iii) annotators' leans are small or spread over many annotators: an annotator who
judges many prompts correlates their means, which the prompt-mean unit does not account for (the
same limitation as a one-way prompt-clustered interval; docs/theory.md §11).

**Small t.** The theorem is asymptotic. Early on σ̂²_t is noisy and can be 0 (the first prompts all
credit k/(k+m)), which would give a zero width. We regularise it with one pseudo-unit at the largest
variance the units can have (`max_variance`: ¼ for a mean of [0, 1] credits, 1 for a difference in
[−1, 1]): σ̃²_t = (Σ (X_i − μ̂_t)² + max_variance) / (t + 1). This is conservative (never smaller
than needed when σ̂² is small by chance) and fades as 1/t; and the stopping rules answer only after
`min_units` units.

Public API
----------
tuned_rho(planned_units, *, alpha, sd) -> float
confidence_sequence(units, *, alpha, rho, max_variance) -> Sequence   (vectorised over studies)
fixed_interval(units, *, alpha) -> Sequence                            (the t-interval, for contrast)
answer_threshold(seq, threshold, margin, *, min_units) -> (…, T) int8  "is θ ≥ c?"
answer_difference(seq, margin, *, min_units) -> (…, T) int8            "is A above B?"
answer_precision(seqs, half_width, *, min_units) -> (…, T) bool         "every headline to ±h"
first_answer(answered) -> (…,) int                                     the stopping time
anytime_interval(credit, prompt_ids, *, weights, planned_units, confidence) -> AnytimeInterval
                                                                       a cell's CS now, from its judgments
fixed_sample_size(sd, effect, *, alpha, power) -> int                  the fixed design it replaces
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "ABOVE",
    "BELOW",
    "AnytimeInterval",
    "EQUIVALENT",
    "UNANSWERED",
    "Sequence",
    "answer_difference",
    "answer_precision",
    "answer_threshold",
    "anytime_interval",
    "confidence_sequence",
    "first_answer",
    "mixture_radius",
    "prompt_means",
    "fixed_interval",
    "fixed_sample_size",
    "tuned_rho",
]

FloatArray = npt.NDArray[np.float64]

#: Answers of `answer_threshold` / `answer_difference`, per unit count.
UNANSWERED, ABOVE, BELOW, EQUIVALENT = 0, 1, 2, 3
#: The fewest units (prompts) before a rule may answer: the CS is asymptotic (module docstring).
MIN_UNITS = 10


@dataclass(frozen=True)
class Sequence:
    """Intervals after each of t = 1..T units, for one study (shape (T,)) or many ((S, T)).

    estimate: the running mean μ̂_t; radius: the half-width; low/high = estimate ∓ radius (not
    clipped, so that a question's answer does not depend on the parameter's range); count: t.
    """

    estimate: FloatArray
    radius: FloatArray
    count: FloatArray
    alpha: float
    method: str

    @property
    def low(self) -> FloatArray:
        return self.estimate - self.radius

    @property
    def high(self) -> FloatArray:
        return self.estimate + self.radius


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def _units(units: npt.ArrayLike) -> FloatArray:
    x = np.asarray(units, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[-1] < 1:
        raise ValueError(
            "units must be a non-empty (T,) or (studies, T) array of unit values"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("units must be finite (NaN or inf found)")
    return x


def _running(x: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Running mean, running sum of squared deviations (Σ (X_i − μ̂_t)²) and t, along the last axis."""
    t = np.arange(1, x.shape[-1] + 1, dtype=np.float64)
    mean = np.cumsum(x, axis=-1) / t
    # Σ (X_i − μ̂_t)² = Σ X_i² − t μ̂_t²; shift by the first unit first for numerical stability.
    shifted = x - x[..., :1]
    m = mean - x[..., :1]
    ss = np.maximum(np.cumsum(shifted**2, axis=-1) - t * m**2, 0.0)
    return mean, ss, t


def tuned_rho(planned_units: float, *, alpha: float = 0.05, sd: float) -> float:
    """ρ that makes the CS tightest at `planned_units` units of standard deviation `sd`.

    Minimising the normal-mixture radius over ρ at V = t* σ² gives ρ² V ≈ −2 log α + log(1 − 2 log α)
    (Howard et al. 2021, eq. (14)). Fix it before the data: the planner's prompt count and the sd it
    assumes (a pilot's, or the bound: ½ for a [0, 1] mean, 1 for a difference in [−1, 1]).
    """
    alpha = _check_alpha(alpha)
    if not planned_units > 0 or not sd > 0:
        raise ValueError(
            f"planned_units and sd must be positive, got {planned_units!r}, {sd!r}"
        )
    a = -2.0 * math.log(alpha)
    return math.sqrt((a + math.log1p(a)) / (planned_units * sd * sd))


def mixture_radius(
    t: FloatArray,
    squares: FloatArray,
    *,
    alpha: float,
    rho: float | FloatArray,
    max_variance: float = 0.25,
) -> FloatArray:
    """The CS radius at t units whose squared deviations from their mean sum to `squares`, with the
    regularised variance σ̃² = (squares + max_variance) / (t + 1) (module docstring)."""
    var = (squares + max_variance) / (t + 1.0)
    v = t * var * rho * rho + 1.0
    return np.asarray(
        np.sqrt(2.0 * v / (t * t * rho * rho) * np.log(np.sqrt(v) / alpha)),
        dtype=np.float64,
    )


def confidence_sequence(
    units: npt.ArrayLike,
    *,
    alpha: float = 0.05,
    rho: float,
    max_variance: float = 0.25,
) -> Sequence:
    """The two-sided (1 − α) asymptotic CS of the units' mean after each unit (module docstring).

    units: (T,) or (studies, T) i.i.d. units in arrival order (prompt means of a cell, or paired
    differences); rho from `tuned_rho`; max_variance: the largest variance a unit can have (¼ for
    values in [0, 1], 1 for differences in [−1, 1]), the pseudo-unit that regularises σ̂²_t.
    """
    alpha = _check_alpha(alpha)
    if not rho > 0 or not max_variance > 0:
        raise ValueError(
            f"rho and max_variance must be positive, got {rho!r}, {max_variance!r}"
        )
    x = _units(units)
    mean, ss, t = _running(x)
    radius = mixture_radius(t, ss, alpha=alpha, rho=rho, max_variance=max_variance)
    return Sequence(
        mean, radius, np.broadcast_to(t, mean.shape).copy(), alpha, "asymptotic CS"
    )


def fixed_interval(units: npt.ArrayLike, *, alpha: float = 0.05) -> Sequence:
    """The fixed-time t-interval μ̂_t ± t_{t−1} s_t / √t after each unit: valid only at a t fixed in
    advance (its coverage under continuous monitoring falls towards 0 as T grows). Shown for contrast;
    radius is inf for t = 1."""
    alpha = _check_alpha(alpha)
    x = _units(units)
    mean, ss, t = _running(x)
    df = np.maximum(t - 1.0, 1.0)
    s2 = ss / df
    q = stats.t.ppf(1.0 - alpha / 2.0, df)
    radius = np.where(t > 1, q * np.sqrt(s2 / t), np.inf)
    return Sequence(
        mean, radius, np.broadcast_to(t, mean.shape).copy(), alpha, "fixed-time t"
    )


def _ready(seq: Sequence, min_units: int) -> npt.NDArray[np.bool_]:
    if not isinstance(min_units, int) or min_units < 1:
        raise ValueError(f"min_units must be a positive integer, got {min_units!r}")
    return seq.count >= min_units


def answer_threshold(
    seq: Sequence, threshold: float, margin: float = 0.0, *, min_units: int = MIN_UNITS
) -> npt.NDArray[np.int8]:
    """ "Is θ ≥ c?" after each unit: ABOVE when the CS lies above c, BELOW when below, EQUIVALENT when
    it lies inside (c − margin, c + margin) (a practical margin fixed in advance; 0 turns this answer
    off), else UNANSWERED.

    Each answer is wrong only if the CS misses θ, probability ≤ α over the whole study, whenever it
    is read (the CS covers θ at every t at once), so the study may stop at the first answer; and
    EQUIVALENT lets a θ at c stop instead of running to its cap.
    """
    if not margin >= 0:
        raise ValueError(f"margin must be ≥ 0, got {margin!r}")
    ready = _ready(seq, min_units)
    out = np.zeros(seq.estimate.shape, dtype=np.int8)
    out[ready & (seq.low > threshold)] = ABOVE
    out[ready & (seq.high < threshold)] = BELOW
    if margin > 0:
        inside = (seq.low > threshold - margin) & (seq.high < threshold + margin)
        out[ready & inside & (out == UNANSWERED)] = EQUIVALENT
    return out


def answer_difference(
    seq: Sequence, margin: float = 0.0, *, min_units: int = MIN_UNITS
) -> npt.NDArray[np.int8]:
    """ "Is A above B?" on the CS of the paired difference Δ = θ_A − θ_B: `answer_threshold` at 0.

    ABOVE: A above B; BELOW: B above A; EQUIVALENT: |Δ| < margin. A false ABOVE/BELOW when Δ = 0 needs
    the CS to miss 0, probability ≤ α; EQUIVALENT is a correct answer when Δ = 0 and lets a study of
    equal policies stop instead of running to its cap.
    """
    return answer_threshold(seq, 0.0, margin, min_units=min_units)


def answer_precision(
    seqs: Seq[Sequence], half_width: float, *, min_units: int = MIN_UNITS
) -> npt.NDArray[np.bool_]:
    """ "Every headline to ±h": True after each unit once every sequence's radius is ≤ h."""
    if not half_width > 0:
        raise ValueError(f"half_width must be positive, got {half_width!r}")
    if not seqs:
        raise ValueError("answer_precision needs at least one sequence")
    done = _ready(seqs[0], min_units)
    for seq in seqs:
        done = done & (seq.radius <= half_width)
    return np.asarray(done, dtype=bool)


def first_answer(answered: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The stopping time: the number of units at the first nonzero/True entry along the last axis,
    0 where none (the study ran to its cap unanswered)."""
    a = np.asarray(answered) != 0
    hit = a.any(axis=-1)
    return np.where(hit, np.argmax(a, axis=-1) + 1, 0).astype(np.int64)


def fixed_sample_size(
    sd: float, effect: float, *, alpha: float = 0.05, power: float = 0.9
) -> int:
    """Units a fixed design needs for a two-sided level-α test to find `effect` with `power`:
    ⌈((z_{1−α/2} + z_{power}) sd / effect)²⌉ (the normal approximation, as the planner uses for widths).
    """
    alpha = _check_alpha(alpha)
    if not 0 < power < 1 or not sd > 0 or not effect > 0:
        raise ValueError("power must be in (0, 1), sd and effect positive")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return int(math.ceil((z * sd / effect) ** 2))


@dataclass(frozen=True)
class AnytimeInterval:
    """A cell's anytime-valid interval now: the CS at t = n_prompts, clipped to [0, 1].

    estimate: the mean of the prompt means (the judgment mean when every prompt has as many judgments);
    planned_units: the prompt count ρ was tuned for; early: fewer than MIN_UNITS prompts, where the
    asymptotic CS is not yet to be trusted (the page says so).
    """

    estimate: float
    low: float
    high: float
    n_prompts: int
    planned_units: int
    confidence: float

    @property
    def early(self) -> bool:
        return self.n_prompts < MIN_UNITS


def prompt_means(
    credit: npt.ArrayLike,
    prompt_ids: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """(sorted prompt ids, their weighted mean credits): a cell's units (module docstring), from its
    rows (one per judgment or decided item)."""
    y = np.asarray(credit, dtype=np.float64)
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=np.float64)
    prompts, codes = np.unique(
        np.asarray(prompt_ids, dtype=np.int64), return_inverse=True
    )
    codes = codes.reshape(-1)
    means = np.bincount(codes, weights=w * y) / np.bincount(codes, weights=w)
    return prompts, means


def anytime_interval(
    credit: npt.ArrayLike,
    prompt_ids: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    planned_units: int,
    confidence: float = 0.95,
    sd: float = 0.5,
) -> AnytimeInterval | None:
    """The CS of one cell from its rows (one per judgment or decided item), as the results page shows it.

    Units are the prompts' weighted mean credits (module docstring); the Robbins-mixture radius at t
    depends on the units only through their mean and variance, so arrival order does not matter for
    the interval now. ρ is tuned at `planned_units` (the study's prompts) with `sd` (default ½, the
    largest a [0, 1] credit's prompt mean can have: no pilot needed, and a smaller true sd only moves
    the tightest point later). None when there are no rows.
    """
    if np.asarray(credit).size == 0:
        return None
    units = prompt_means(credit, prompt_ids, weights)[1]
    alpha = 1.0 - confidence
    cs = confidence_sequence(
        units,
        alpha=alpha,
        rho=tuned_rho(max(planned_units, 1), alpha=alpha, sd=sd),
        max_variance=0.25,
    )
    return AnytimeInterval(
        estimate=float(cs.estimate[-1]),
        low=max(0.0, float(cs.low[-1])),
        high=min(1.0, float(cs.high[-1])),
        n_prompts=int(units.size),
        planned_units=int(planned_units),
        confidence=float(confidence),
    )
