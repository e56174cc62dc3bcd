"""The annotators' adversary: which opponents to screen, and f(k) over them with an honest interval.

The results page's headline f̂(k) is the win rate against the *model's* adversary: the m-list the
population model says wins most often (theory.md §2b). When the model is wrong about people the
annotators' worst opponent is another list and that headline overstates f(k). This module is the
pure core of the remedy (docs/theory.md §12):

* :func:`screening_opponents` -- per prompt, the m-lists worth showing people: the model's own
  strongest lists, plus the worst lists under populations perturbed and resampled around the model
  (what the model is unsure about), most frequent first.
* :func:`screened_minimum` -- from judgments against those opponents, split into a *screening*
  share and a *confirmation* share, the people's f(k) = mean over prompts of the min over
  screened opponents of the win rate: the point estimate is the confirmation share's win rate
  against the opponent the screening share found worst (unbiased for that opponent); the interval
  is [lower end of the plug-in mean of per-prompt minima, upper end of the confirmed estimate],
  each end one-sided at (1 − confidence)/2, so it covers the target whatever the screen picked.

No Django here: the study code turns rows of the database into the arrays these functions take.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.policies import Population, find_adversary, multiset_win_rate
from workers.stats.intervals import WinRateInterval, win_rate_interval

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "ScreenedMinimum",
    "screened_minimum",
    "screening_opponents",
]

#: Perturbed populations drawn by :func:`screening_opponents` by default.
DEFAULT_PERTURBATIONS = 64


def _model_ranked(
    pop: Population, policy: FloatArray, k: int, m: int, top: int
) -> list[tuple[int, ...]]:
    """The model's ``top`` strongest opponents: for m = 1 the responses of largest pick
    probability; for m > 1 the adversary and then the adversary of the remaining responses."""
    if m == 1:
        wins = [multiset_win_rate(pop, policy, k, [i]) for i in range(pop.n_responses)]
        return [(int(i),) for i in np.argsort(wins, kind="stable")[:top]]
    out: list[tuple[int, ...]] = []
    left = np.arange(pop.n_responses, dtype=np.intp)
    while len(out) < top and left.size:
        adv = find_adversary(pop, policy, k, m, candidates=left)
        out.append(adv.responses)
        left = left[~np.isin(left, adv.responses)]
    return out


def screening_opponents(
    utilities: npt.ArrayLike,
    weights: npt.ArrayLike,
    policy: npt.ArrayLike,
    k: int,
    m: int = 1,
    *,
    n_opponents: int = 4,
    n_model: int = 2,
    utility_sd: float | None = None,
    n_perturbations: int = DEFAULT_PERTURBATIONS,
    rng: np.random.Generator | int | None = None,
) -> list[tuple[int, ...]]:
    """Up to ``n_opponents`` m-lists to screen with people for one prompt, the model's adversary first.

    The first ``n_model`` are the model's own strongest lists (:func:`_model_ranked`). The rest
    cover the model's uncertainty: ``n_perturbations`` populations are drawn around the model, each
    with its types resampled (weights ~ Dirichlet(T·w), the bootstrap's Bayesian twin; Rubin 1981)
    and its utilities moved by independent N(0, utility_sd²) noise; the worst list of the policy
    under each is found (:func:`workers.policies.find_adversary`), and the lists found most often
    fill the remaining places (ties: first found). ``utility_sd`` defaults to half the sd of the
    model's utilities: the model's error is unknown at design time, so the default is a scale the
    bench (bench/bench_annotators_adversary.py) checks against model errors from none to about its own size.

    Returns
    -------
    list of tuple of int
        Distinct sorted m-lists (response indices), at most ``n_opponents``, at least one.
    """
    u = np.asarray(utilities, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    pi = np.asarray(policy, dtype=np.float64)
    if n_opponents < 1 or n_model < 1 or n_perturbations < 0:
        raise ValueError(
            "n_opponents and n_model must be >= 1 and n_perturbations >= 0"
        )
    pop = Population(u, w)
    gen = np.random.default_rng(rng)
    chosen = _model_ranked(pop, pi, k, m, min(n_model, n_opponents))
    sd = float(np.std(u)) / 2.0 if utility_sd is None else float(utility_sd)
    if not math.isfinite(sd) or sd < 0:
        raise ValueError(f"utility_sd must be a finite number >= 0, got {utility_sd}")
    found: Counter[tuple[int, ...]] = Counter()
    for _ in range(n_perturbations if len(chosen) < n_opponents else 0):
        wp = gen.dirichlet(np.maximum(w * w.size, 1e-3))
        up = u + gen.normal(0.0, sd, size=u.shape) if sd > 0 else u
        found[find_adversary(Population(up, wp / wp.sum()), pi, k, m).responses] += 1
    for ys, _count in found.most_common():
        if len(chosen) >= n_opponents:
            break
        if ys not in chosen:
            chosen.append(ys)
    return chosen


@dataclass(frozen=True)
class ScreenedMinimum:
    """The people's f(k) over screened opponents (docs/theory.md §12).

    estimate: the confirmation share's mean win rate against each prompt's selected opponent
        (prompts weighted equally).
    low, high: the interval, ``low`` from the plug-in mean of per-prompt minima over *all* rows
        (biased low, so a valid lower end), ``high`` from the confirmed estimate (unbiased for the
        selected opponents, whose mean is >= the target, so a valid upper end); each one-sided
        at (1 − confidence)/2.
    plug_in: the mean over prompts of min over opponents of the per-opponent mean credit.
    selected: per prompt (in sorted prompt order), the opponent label the screening share chose.
    n_screen, n_confirm: rows of each share used.
    confirmed, lower: the two cell intervals the ends come from.
    """

    estimate: float
    low: float
    high: float
    plug_in: float
    confidence: float
    selected: dict[object, object]
    n_screen: int
    n_confirm: int
    confirmed: WinRateInterval
    lower: WinRateInterval


def _means(
    y: FloatArray,
    mask: npt.NDArray[np.bool_],
    o: npt.NDArray[np.intp],
    n_opp: int,
    w: FloatArray | None = None,
) -> FloatArray:
    """Per-opponent (weighted) mean credit over the rows in ``mask`` (NaN where an opponent has none)."""
    weights = None if w is None else w[mask]
    total = np.bincount(
        o[mask],
        weights=y[mask] * (1.0 if weights is None else weights),
        minlength=n_opp,
    )
    count = np.bincount(o[mask], weights=weights, minlength=n_opp).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = total / count
    return out


def _select(
    y: FloatArray,
    p: npt.NDArray[np.intp],
    o: npt.NDArray[np.intp],
    screen: npt.NDArray[np.bool_],
    n_prompts: int,
    n_opp: int,
    prior: FloatArray | None,
    w: FloatArray | None = None,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Per prompt: the opponent the screening rows find worst, and the plug-in argmin over all rows.

    Ties (and opponents without screening rows) fall back on ``prior`` (the model's predicted
    win rate, lower first), then on the opponent's order of first appearance.
    """
    selected = np.full(n_prompts, -1, dtype=np.intp)
    argmin_all = np.full(n_prompts, -1, dtype=np.intp)
    for j in range(n_prompts):
        rows = p == j
        s_mean = _means(y, rows & screen, o, n_opp, w)
        a_mean = _means(y, rows, o, n_opp, w)
        tie = prior[j] if prior is not None else np.zeros(n_opp)
        present = np.isfinite(a_mean)
        if np.isfinite(s_mean).any():
            key = np.where(np.isfinite(s_mean), s_mean, np.inf)
            selected[j] = int(np.lexsort((tie, key))[0])
        argmin_all[j] = int(np.lexsort((tie, np.where(present, a_mean, np.inf)))[0])
    return selected, argmin_all


def screened_minimum(
    credit: npt.ArrayLike,
    prompt_ids: npt.ArrayLike,
    annotator_ids: npt.ArrayLike,
    opponent_ids: npt.ArrayLike,
    confirmation: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    model_win_rates: dict[tuple[object, object], float] | None = None,
    weights: npt.ArrayLike | None = None,
    decided: npt.ArrayLike | None = None,
) -> ScreenedMinimum:
    """Mean over prompts of the min over screened opponents of the people's win rate, with an interval.

    Parameters
    ----------
    credit, prompt_ids, annotator_ids : (n,)
        As in :func:`workers.stats.intervals.win_rate_interval`: every judgment of one
        (policy, k, m) against any screened opponent of its prompt.
    opponent_ids : (n,) labels
        The opponent of each row, unique within its prompt (e.g. the m-list's candidate ids).
    confirmation : (n,) bools
        True for rows of the confirmation share (items built, or judgments set aside, for the
        opponent the screening share selected), False for the screening share.
    model_win_rates : {(prompt, opponent): win rate}, optional
        The model's predictions, used only to break ties in the selection.
    weights, decided : (n,), optional
        As in :func:`workers.stats.intervals.win_rate_interval`: row weights within a prompt (an item
        decided by construction enters as one row weighing as its item's judgments would) and rows no
        person judged (in their prompt's cluster, in no annotator's). Prompts still count equally.

    Returns
    -------
    ScreenedMinimum

    Method
    ------
    Selection: per prompt, ĵ_p = argmin over opponents of the screening rows' mean credit.
    Point: θ̂ = (1/P) Σ_p mean of the confirmation rows against ĵ_p. Given the screening share,
    those rows are fresh draws, so θ̂ is unbiased for θ_sel = (1/P) Σ_p W_p(ĵ_p) ≥ θ =
    (1/P) Σ_p min_j W_pj: its only bias is the screen's miss W_p(ĵ_p) − min_j W_pj ≥ 0.
    Interval: high = the upper end of θ̂'s two-way cluster-robust interval at level
    1 − α (α = 1 − confidence), so P(θ > high) ≤ P(θ_sel > high) ≈ α/2. low = the lower end of the
    same interval for the plug-in μ̂ = (1/P) Σ_p min_j Ŵ_pj over all rows (each prompt's argmin
    cell, rows weighted 1/n so prompts count equally); E μ̂ ≤ θ (a min of unbiased estimates is
    biased low, Jensen), so P(θ < low) ≤ P(E μ̂ < low) ≈ α/2. Union bound: coverage ≥ 1 − α for
    any screen, to the first order of the cluster-robust normal approximation. The target is the
    minimum over the *screened* opponents; the bench measures coverage of the minimum over every
    m-list.
    """
    y, arrays = _iv_rows(
        credit, (prompt_ids, annotator_ids, opponent_ids, confirmation), confidence
    )
    prompts, p = np.unique(arrays[0], return_inverse=True)
    opponents, o = np.unique(arrays[2], return_inverse=True)
    p, o = p.reshape(-1).astype(np.intp), o.reshape(-1).astype(np.intp)
    confirm = arrays[3].astype(bool)
    w = _row_weights(weights, y.size)
    dec = (
        np.zeros(y.size, dtype=bool)
        if decided is None
        else np.asarray(decided, dtype=bool).reshape(-1)
    )
    if dec.size != y.size:
        raise ValueError("decided needs the length of credit")
    prior = None
    if model_win_rates is not None:
        prior = np.array(
            [
                [model_win_rates.get((_plain(pr), _plain(op)), 0.5) for op in opponents]
                for pr in prompts
            ],
            dtype=np.float64,
        )
    selected, argmin_all = _select(
        y, p, o, ~confirm, prompts.size, opponents.size, prior, w
    )
    use_confirm = confirm & (o == selected[p])
    if not use_confirm.any():
        raise ValueError(
            "no confirmation rows against a selected opponent: nothing to estimate"
        )
    confirmed, lower = (
        _prompt_mean_interval(y, p, arrays[1], mask, prompts.size, confidence, w, dec)
        for mask in (use_confirm, o == argmin_all[p])
    )
    return ScreenedMinimum(
        estimate=confirmed.estimate,
        low=max(0.0, min(lower.low, confirmed.estimate)),
        high=min(1.0, max(confirmed.high, confirmed.estimate)),
        plug_in=lower.estimate,
        confidence=confidence,
        selected={
            _plain(prompts[j]): _plain(opponents[selected[j]])
            for j in range(prompts.size)
            if selected[j] >= 0
        },
        n_screen=int((~confirm & ~dec).sum()),
        n_confirm=int((use_confirm & ~dec).sum()),
        confirmed=confirmed,
        lower=lower,
    )


def _iv_rows(
    credit: npt.ArrayLike, columns: tuple[npt.ArrayLike, ...], confidence: float
) -> tuple[FloatArray, list[npt.NDArray[np.generic]]]:
    """Credits in [0, 1] and the label columns, all of one length n >= 1; a clear error otherwise."""
    y = np.asarray(credit, dtype=np.float64).reshape(-1)
    arrays = [np.asarray(x).reshape(-1) for x in columns]
    if y.size == 0 or any(a.size != y.size for a in arrays):
        raise ValueError(
            "credit, prompt_ids, annotator_ids, opponent_ids and confirmation need the same length n >= 1"
        )
    if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
        raise ValueError("credit must hold numbers in [0, 1]")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return y, arrays


def _prompt_mean_interval(
    y: FloatArray,
    p: npt.NDArray[np.intp],
    annotators: npt.NDArray[np.generic],
    mask: npt.NDArray[np.bool_],
    n_prompts: int,
    confidence: float,
    w: FloatArray | None = None,
    decided: npt.NDArray[np.bool_] | None = None,
) -> WinRateInterval:
    """The two-way interval of the rows in ``mask`` with every prompt weighted equally (rows within
    a prompt by ``w``).

    The weights sum to the rows' total weight, as the variance floor of ``win_rate_interval`` expects.
    """
    rw = np.ones(y.size) if w is None else w
    per_prompt = np.bincount(p[mask], weights=rw[mask], minlength=n_prompts)
    weights = (
        rw[mask] * (rw[mask].sum() / np.count_nonzero(per_prompt)) / per_prompt[p[mask]]
    )
    return win_rate_interval(
        y[mask],
        p[mask],
        annotators[mask],
        weights=weights,
        decided=None if decided is None else decided[mask],
        confidence=confidence,
    )


def _row_weights(weights: npt.ArrayLike | None, n: int) -> FloatArray | None:
    """Positive finite row weights of length n, or None (all 1)."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != n or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("weights must be n positive finite numbers")
    return w


def _plain(x: object) -> object:
    """A NumPy scalar as its Python value (labels come back as the caller gave them)."""
    item = getattr(x, "item", None)
    return item() if callable(item) else x
