"""The difference between two policies' win rates, with its own two-way clustered interval. Pure NumPy/SciPy.

Two policies of one study are judged on the same prompts by the same annotators, so their
headline cells (each policy against the adversary at one k) are not independent: a hard prompt
lowers both, a lenient annotator raises both. Comparing the two cells' intervals by eye ignores
that covariance (and overlapping intervals are not a test). This module estimates
f̂_A − f̂_B with the same two-way cluster-robust variance as `intervals.win_rate_interval`
(Cameron, Gelbach & Miller 2011), on the stacked rows of both cells: each row's score is its
cell's mean-credit score, with the sign of its side, and the cluster sums run over prompts and
annotators of both cells together, so the covariance between the cells enters through the
shared clusters (the paired design) instead of being assumed zero.

Public API
----------
difference_interval(credit_a, prompt_ids_a, annotator_ids_a, credit_b, prompt_ids_b, annotator_ids_b,
                    *, weights_a, decided_a, weights_b, decided_b, confidence) -> DifferenceInterval
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import stats

from ._validation import (
    FloatArray,
    _check_confidence,
    _check_credit,
    _check_decided,
    _check_ids,
    _check_weights,
    _recode,
)
from .intervals import _annotator_part, _one_way

__all__ = ["DifferenceInterval", "difference_interval"]

METHOD_PAIRED = (
    "difference of two cells, paired two-way cluster-robust (CGM) variance over the shared "
    "prompts and annotators, t with min(G_prompt, G_annotator) - 1 df"
)
METHOD_TOO_FEW = (
    "fewer than 2 prompts or 2 annotators: no interval beyond [-1, 1] is honest"
)


@dataclass(frozen=True)
class DifferenceInterval:
    """f̂_A − f̂_B with its interval.

    estimate_a, estimate_b: each side's (weighted) mean credit, as `win_rate_interval` gives it.
    low, high: the `confidence` interval of the difference, clipped to [-1, 1].
    se, df: the standard error and the t reference's degrees of freedom (clusters of both
    sides together); n_prompts, n_annotators: those clusters (annotators of judgments only).
    variance: the components {"prompt", "annotator", "prompt_x_annotator", "two_way", "floor"}.
    """

    estimate: float
    low: float
    high: float
    se: float
    df: float
    estimate_a: float
    estimate_b: float
    n_prompts: int
    n_annotators: int
    confidence: float
    method: str
    variance: dict[str, float] = field(default_factory=dict)

    @property
    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0: the data separate the two policies."""
        return self.low > 0.0 or self.high < 0.0


def _side(
    credit: npt.ArrayLike,
    weights: npt.ArrayLike | None,
    decided: npt.ArrayLike | None,
    name: str,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    try:
        y = _check_credit(credit, f"credit_{name}")
        return y, _check_weights(weights, y.size), _check_decided(decided, y.size)
    except ValueError as exc:
        message = str(exc)
        if message.startswith(("weights", "decided")):
            message = message.replace(" ", f"_{name} ", 1)
        raise ValueError(message) from exc


def _joint_ids(
    a: npt.ArrayLike, b: npt.ArrayLike, name: str, n: int
) -> npt.NDArray[np.intp]:
    """One code per label over both sides, so that a prompt (annotator) of A and of B is one cluster."""
    both = np.concatenate([np.asarray(a), np.asarray(b)])
    return _check_ids(both, name, n)


def difference_interval(
    credit_a: npt.ArrayLike,
    prompt_ids_a: npt.ArrayLike,
    annotator_ids_a: npt.ArrayLike,
    credit_b: npt.ArrayLike,
    prompt_ids_b: npt.ArrayLike,
    annotator_ids_b: npt.ArrayLike,
    *,
    weights_a: npt.ArrayLike | None = None,
    decided_a: npt.ArrayLike | None = None,
    weights_b: npt.ArrayLike | None = None,
    decided_b: npt.ArrayLike | None = None,
    confidence: float = 0.95,
) -> DifferenceInterval:
    """f̂_A − f̂_B of two cells judged on shared prompts and annotators, with a paired interval.

    Parameters
    ----------
    credit_a, prompt_ids_a, annotator_ids_a (and _b) : (n_a,), (n_b,) arrays
        Each side's rows as `intervals.win_rate_interval` takes them; the labels are compared
        across the sides (the same prompt or annotator in both is one cluster).
    weights_a, decided_a (and _b) : optional
        Row weights and the rows decided by construction (a prompt, no annotator), as in
        `win_rate_interval`.
    confidence : float in (0, 1)

    Method
    ------
    With W_s = Σ w over side s and ȳ_s its weighted mean, each row gets the score
    e_i = ± w_i (y_i − ȳ_s) / W_s (+ for A, − for B), the linearisation of ȳ_A − ȳ_B. The
    CGM one-way terms V_G = G/(G−1) Σ_g S_g² sum the scores of both sides inside each
    cluster, so a prompt that moves both policies alike cancels (that is the pairing), and

        V = max(V_prompt + V_annotator − V_prompt∩annotator, V_prompt, V_annotator, floor),

    as for one cell. The floor Σ_s p̃_s(1 − p̃_s)/(W_s + 4)², p̃_s = (Σ w y + 2)/(W_s + 4), is one
    pseudo-judgment's Agresti–Coull variance per side: it only keeps two constant cells
    (all 0 or all 1) from a zero-width interval, being O(1/n²) where the data's variance is
    O(1/n). The interval is the estimate ± t_{df} √V with df = min(G_prompt, G_annotator) − 1,
    clipped to [−1, 1]. Its coverage on simulated paired designs is checked in
    tests/test_difference.py.

    Examples
    --------
    >>> r = difference_interval([1, 1, 1, 0], [1, 1, 2, 2], [7, 8, 7, 8],
    ...                         [1, 0, 0, 0], [1, 1, 2, 2], [7, 8, 7, 8])
    >>> round(r.estimate, 2), r.low <= r.estimate <= r.high
    (0.5, True)
    """
    confidence = _check_confidence(confidence)
    y_a, w_a, d_a = _side(credit_a, weights_a, decided_a, "a")
    y_b, w_b, d_b = _side(credit_b, weights_b, decided_b, "b")
    n = y_a.size + y_b.size
    for label, ids, size in (
        ("prompt_ids_a", prompt_ids_a, y_a.size),
        ("annotator_ids_a", annotator_ids_a, y_a.size),
        ("prompt_ids_b", prompt_ids_b, y_b.size),
        ("annotator_ids_b", annotator_ids_b, y_b.size),
    ):
        _check_ids(ids, label, size)
    p = _joint_ids(prompt_ids_a, prompt_ids_b, "prompt_ids", n)
    a = _joint_ids(annotator_ids_a, annotator_ids_b, "annotator_ids", n)
    human = ~np.concatenate([d_a, d_b])
    mean_a, mean_b = float(w_a @ y_a / w_a.sum()), float(w_b @ y_b / w_b.sum())
    estimate = mean_a - mean_b
    g_p = int(p.max()) + 1
    g_a = int(np.unique(a[human]).size)
    if g_p < 2 or (human.any() and g_a < 2):
        return DifferenceInterval(
            estimate, -1.0, 1.0, math.nan, 0, mean_a, mean_b, g_p, g_a, confidence,
            METHOD_TOO_FEW,
        )  # fmt: skip
    scores = np.concatenate(
        [w_a * (y_a - mean_a) / w_a.sum(), -w_b * (y_b - mean_b) / w_b.sum()]
    )[:, None]
    p = _recode(p)
    v_p = float(_one_way(p, scores, g_p)[0, 0])
    v_a_m, v_pa_m = _annotator_part(p, a, human, scores)
    v_a, v_pa = float(v_a_m[0, 0]), float(v_pa_m[0, 0])
    floor = 0.0
    for y, w in ((y_a, w_a), (y_b, w_b)):
        shrunk = (float(w @ y) + 2.0) / (float(w.sum()) + 4.0)
        floor += shrunk * (1.0 - shrunk) / (float(w.sum()) + 4.0) ** 2
    two_way = v_p + v_a - v_pa
    se = math.sqrt(max(two_way, v_p, v_a, floor))
    df = (min(g_p, g_a) if human.any() else g_p) - 1
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return DifferenceInterval(
        estimate=estimate,
        low=max(-1.0, estimate - half),
        high=min(1.0, estimate + half),
        se=se,
        df=df,
        estimate_a=mean_a,
        estimate_b=mean_b,
        n_prompts=g_p,
        n_annotators=g_a,
        confidence=confidence,
        method=METHOD_PAIRED,
        variance={
            "prompt": v_p,
            "annotator": v_a,
            "prompt_x_annotator": v_pa,
            "two_way": two_way,
            "floor": floor,
        },
    )
