"""CTRL (InfAlign) and best-of-N policies on a finite pool (theory.md section 5).

Given one scalar reward per response and the reference ``mu`` (the pool's sampling
distribution):

1. calibrate: ``C(i) = mu(r < r_i) + 1/2 mu(r = r_i)``, the reward's quantile under ``mu``;
2. transform: ``Phi(u) = exp(t u)`` (best-of-N, ``"bon"``), ``-exp(-t u)`` (worst-of-N,
   ``"won"``) or ``u`` (``"identity"``), applied without rescaling;
3. KL-regularised maximisation, closed form on a finite pool:
   ``pi(i) propto mu(i) exp(Phi(C(i)) / beta)``.

References
----------
Balashankar et al., *InfAlign: Inference-aware language model alignment*, arXiv 2412.19792;
theory.md section 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.optimize
import scipy.special

from . import _validation as v
from .population import Population, _integral_power, _masses, win_rate

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "CTRL_GRID",
    "CTRL_TARGET_KL",
    "CTRL_T_GRID",
    "CtrlFit",
    "best_of_k_win_rate",
    "best_of_n_policy",
    "beta_for_kl",
    "calibrate",
    "ctrl_policy",
    "fit_ctrl",
    "kl_divergence",
    "quantile_rewards",
]

TRANSFORMS = ("bon", "won", "identity")


def _levels_1d(rewards: FloatArray, mu: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``mu``-mass strictly below and tied with each reward, both shape (N,)."""
    order = np.argsort(rewards, kind="stable")
    rs = rewards[order]
    cs = np.concatenate([[0.0], np.cumsum(mu[order])])
    lo = np.searchsorted(rs, rewards, side="left")
    hi = np.searchsorted(rs, rewards, side="right")
    below = cs[lo]
    tied = np.maximum(cs[hi] - below, 0.0)
    return below, tied


def _calibrate(rewards: FloatArray, mu: FloatArray) -> FloatArray:
    below, tied = _levels_1d(rewards, mu)
    return np.clip(below + 0.5 * tied, 0.0, 1.0)


def calibrate(rewards: npt.ArrayLike, reference: npt.ArrayLike) -> FloatArray:
    """Calibrated reward ``C(i) = mu(r < r_i) + 1/2 mu(r = r_i)`` (theory.md section 5).

    Parameters
    ----------
    rewards : array_like, shape (N,)
        Finite rewards ``r``.
    reference : array_like, shape (N,)
        The reference ``mu`` on the simplex.

    Returns
    -------
    ndarray, shape (N,)
        Quantiles in ``[0, 1]``.

    Examples
    --------
    >>> calibrate([0.0, 1.0, 1.0, 2.0], [0.25, 0.25, 0.25, 0.25])
    array([0.125, 0.5  , 0.5  , 0.875])
    """
    r, mu = v._iv_rewards_reference(rewards, reference)
    return _calibrate(r, mu)


def _check_transform(transform: object, t: object) -> float:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    if transform == "identity":
        return 0.0 if t is None else v._check_float(t, "t", minimum=0.0, strict=True)
    if t is None:
        raise ValueError(f"t must be given (> 0) for transform={transform!r}")
    return v._check_float(t, "t", minimum=0.0, strict=True)


def _transform(c: FloatArray, transform: str, t: float) -> FloatArray:
    if transform == "bon":
        return np.exp(t * c)
    if transform == "won":
        return -np.exp(-t * c)
    return c


def _tilt(mu: FloatArray, phi: FloatArray, lam: float) -> FloatArray:
    """``pi propto mu exp(lam * phi)`` computed in log space (``mu = 0`` stays 0)."""
    with np.errstate(divide="ignore"):
        logits = np.log(mu) + lam * phi
    return np.exp(logits - scipy.special.logsumexp(logits))


def _kl(p: FloatArray, q: FloatArray) -> float:
    on = p > 0
    if np.any(q[on] <= 0):
        return float("inf")
    return float(max(0.0, np.sum(p[on] * (np.log(p[on]) - np.log(q[on])))))


def kl_divergence(policy: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    """``KL(pi || mu) = sum_i pi(i) log(pi(i) / mu(i))`` (``0 log 0 = 0``; inf if not abs. continuous)."""
    p = v._check_simplex(policy, "policy")
    q = v._check_simplex(reference, "reference", p.size)
    return _kl(p, q)


def ctrl_policy(
    rewards: npt.ArrayLike,
    reference: npt.ArrayLike,
    *,
    t: float | None = None,
    beta: float,
    transform: str = "bon",
) -> FloatArray:
    """CTRL policy ``pi(i) propto mu(i) exp(Phi(C(i)) / beta)`` (theory.md section 5).

    Parameters
    ----------
    rewards : array_like, shape (N,)
        Finite rewards, one per response.
    reference : array_like, shape (N,)
        The reference ``mu`` on the simplex; zero-mass responses get zero mass.
    t : float
        Transform temperature, ``> 0``; required for ``"bon"`` (good values about 5-15)
        and ``"won"``, optional (unused) for ``"identity"``.
    beta : float
        KL strength, ``> 0``. Only ``Phi / beta`` matters; ``Phi`` is not rescaled.
    transform : {"bon", "won", "identity"}
        ``Phi(u) = exp(t u)``, ``-exp(-t u)`` or ``u``.

    Returns
    -------
    ndarray, shape (N,)
        The policy, computed in log space (no overflow for small ``beta``).
    """
    r, mu = v._iv_rewards_reference(rewards, reference)
    t_ = _check_transform(transform, t)
    beta = v._check_float(beta, "beta", minimum=0.0, strict=True)
    phi = _transform(_calibrate(r, mu), str(transform), t_)
    return _tilt(mu, phi, 1.0 / beta)


def best_of_n_policy(
    rewards: npt.ArrayLike, reference: npt.ArrayLike, n: int
) -> FloatArray:
    """Exact distribution of the top-reward response among ``n`` i.i.d. draws from ``mu``.

    Ties at the top are split uniformly per position (as in theory.md section 1): with
    ``a`` the ``mu``-mass strictly below ``r_i`` and ``e`` the mass tied with it,

    .. math:: P(i) = \\mu(i) ((a + e)^n - a^n) / e = n \\mu(i) \\int_0^1 (a + s e)^{n-1} ds,

    which is ``n u^{n-1}`` in quantile space for a continuous reward.

    Parameters
    ----------
    rewards : array_like, shape (N,)
    reference : array_like, shape (N,)
        ``mu`` on the simplex.
    n : int
        Number of draws, ``n >= 1`` (``n = 1`` returns ``mu``).

    Returns
    -------
    ndarray, shape (N,)
    """
    r, mu = v._iv_rewards_reference(rewards, reference)
    n = v._check_int(n, "n", 1)
    if n == 1:
        return mu.copy()
    below, tied = _levels_1d(r, mu)
    p = n * mu * _integral_power(below, tied, n - 1)
    policy: FloatArray = p / p.sum()
    return policy


def beta_for_kl(
    rewards: npt.ArrayLike,
    reference: npt.ArrayLike,
    target_kl: float,
    *,
    t: float | None = None,
    transform: str = "bon",
    rtol: float = 1e-10,
) -> float:
    """The ``beta`` at which :func:`ctrl_policy` has ``KL(pi || mu) = target_kl``.

    ``KL`` increases with ``lambda = 1/beta`` (its derivative is
    ``lambda Var_pi(Phi) >= 0``), from 0 at ``lambda = 0`` to
    ``KL_max = -log mu(argmax Phi)`` as ``lambda -> inf``. The root in ``lambda`` is
    bracketed by doubling and found by :func:`scipy.optimize.brentq`.

    Parameters
    ----------
    rewards, reference : array_like, shape (N,)
    target_kl : float
        Target KL in nats, ``0 < target_kl < KL_max``.
    t, transform
        As in :func:`ctrl_policy`.
    rtol : float, default 1e-10
        Relative tolerance on ``lambda``.

    Returns
    -------
    float
        ``beta > 0``.

    Raises
    ------
    ValueError
        If ``target_kl`` is not ``> 0`` or is unreachable (``>= KL_max``; for example all
        rewards equal on the support of ``mu``). The message names ``target_kl``.
    """
    r, mu = v._iv_rewards_reference(rewards, reference)
    t_ = _check_transform(transform, t)
    target = v._check_float(target_kl, "target_kl", minimum=0.0, strict=True)
    rtol = v._check_float(rtol, "rtol", minimum=0.0, strict=True)
    phi = _transform(_calibrate(r, mu), str(transform), t_)
    on = mu > 0
    top = phi[on].max()
    top_mass = mu[on & (phi >= top)].sum()
    kl_max = float(-np.log(top_mass))
    if target >= kl_max:
        raise ValueError(
            f"target_kl={target:.6g} is unreachable: the largest KL(pi || mu) of this CTRL family is {kl_max:.6g} nats"
        )
    phi = phi - top  # shift for numerical range; pi is unchanged

    def excess(lam: float) -> float:
        return _kl(_tilt(mu, phi, lam), mu) - target

    hi = 1.0 / max(float(np.ptp(phi[on])), 1e-300)
    for _ in range(2100):
        if excess(hi) > 0:
            break
        hi *= 2.0
    else:  # pragma: no cover - only for targets within rounding of KL_max
        raise ValueError(
            f"target_kl={target:.6g} is numerically unreachable (KL_max={kl_max:.6g})"
        )
    lam = scipy.optimize.brentq(excess, 0.0, hi, rtol=rtol, xtol=1e-300, maxiter=500)
    return 1.0 / lam


# --------------------------------------------------------------------------------------
# scale-free single rewards and CTRL's tuning (issue #11.5)
# --------------------------------------------------------------------------------------

#: CTRL's default KL budget: beta is chosen so that KL(pi || mu) hits it (nats).
CTRL_TARGET_KL = 0.5
#: ``t`` values of the best-of-N transform ``exp(t u)`` searched by :func:`fit_ctrl`.
CTRL_T_GRID = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
#: The transforms :func:`fit_ctrl` searches: the identity (optimal at ``k = 1``), then
#: best-of-N at every ``t`` of ``CTRL_T_GRID``.
CTRL_GRID: tuple[tuple[str, float | None], ...] = (
    ("identity", None),
    *(("bon", t) for t in CTRL_T_GRID),
)


def quantile_rewards(pop: Any, reference: npt.ArrayLike) -> FloatArray:
    """One scale-free reward per response: the type-weighted mean calibrated quantile.

    For type ``t`` the calibrated quantile of response ``i`` under the reference ``mu`` is
    ``C_t(i) = mu(U_t < U_ti) + 1/2 mu(U_t = U_ti)`` (theory.md section 5's calibration,
    ties at half their mass), and

    .. math:: r(i) = \\sum_t w_t C_t(i) \\in [0, 1].

    ``C_t`` depends on the order of type ``t``'s utilities only, so ``r`` is unchanged by
    any strictly increasing transform of any one type's utilities (a source that reports
    log-odds next to one that reports cosines no longer outweighs it), unlike the mean of
    raw utilities. For a single type it is :func:`calibrate`.

    Parameters
    ----------
    pop : Population
        ``T`` types over ``N`` responses.
    reference : array_like, shape (N,)
        ``mu`` on the simplex (the pool's sampling distribution).

    Returns
    -------
    ndarray, shape (N,)
        Cost ``O(T N)`` after the population's cached per-type sort.
    """
    pop = v._check_population(pop)
    mu = v._check_simplex(reference, "reference", pop.n_responses)
    below, tied = _masses(pop, mu)
    out: FloatArray = np.clip(pop.weights @ (below + 0.5 * tied), 0.0, 1.0)
    return out


def best_of_k_win_rate(
    rewards: npt.ArrayLike, policy: npt.ArrayLike, reference: npt.ArrayLike, k: int
) -> float:
    """P(a user who picks the top reward picks one of ``k`` draws from ``policy`` over ``k`` from ``mu``).

    The ``2k`` positions are shown together; the top reward wins and ties are split per
    position (theory.md section 1), i.e. :func:`win_rate` on the one-type population
    ``rewards`` with ``m = k``. CTRL's tuning criterion (InfAlign's best-of-N vs best-of-N
    win rate with ``N = k``).
    """
    r = v._check_finite_array(rewards, "rewards", 1)
    return win_rate(Population(r[None, :]), policy, k, reference, k)


@dataclass(frozen=True)
class CtrlFit:
    """The CTRL policy chosen by :func:`fit_ctrl`, with how it was chosen.

    policy (N,); transform, t, beta: the chosen member of the family; kl: KL(pi || mu);
    target_kl: the KL asked for (before the cap at 95% of the reachable maximum); score:
    its :func:`best_of_k_win_rate` against ``mu``; note: why ``pi = mu``, if it is.
    """

    policy: FloatArray
    transform: str
    t: float | None
    beta: float | None
    kl: float
    target_kl: float
    score: float
    note: str = ""


def fit_ctrl(
    rewards: npt.ArrayLike,
    reference: npt.ArrayLike,
    k: int,
    *,
    target_kl: float = CTRL_TARGET_KL,
    t: float | None = None,
) -> CtrlFit:
    """CTRL tuned for a user who picks the best of ``k`` (theory.md section 5).

    For each ``(transform, t)`` of ``CTRL_GRID`` (or best-of-N at the given ``t`` only),
    ``beta`` is set by :func:`beta_for_kl` so that ``KL(pi || mu) = target_kl`` (capped
    at 95% of the largest reachable KL, ``-log mu(top-reward responses)``), and the member
    with the largest :func:`best_of_k_win_rate` against ``mu`` wins (the first on ties, so
    the identity when it is as good). At ``k = 1`` that criterion is ``E_pi[C]``, linear in
    ``pi``, whose maximiser at a fixed KL is exactly the identity transform.

    Parameters
    ----------
    rewards : array_like, shape (N,)
        One reward per response (use :func:`quantile_rewards` for a population).
    reference : array_like, shape (N,)
        ``mu`` on the simplex.
    k : int
        Samples the user sees from each side, ``>= 1``.
    target_kl : float
        KL budget in nats, ``> 0``.
    t : float, optional
        Fix the best-of-N temperature instead of searching.

    Returns
    -------
    CtrlFit
    """
    r, mu = v._iv_rewards_reference(rewards, reference)
    k = v._check_int(k, "k", 1)
    requested = v._check_float(target_kl, "target_kl", minimum=0.0, strict=True)
    grid = (
        CTRL_GRID
        if t is None
        else (("bon", v._check_float(t, "t", minimum=0.0, strict=True)),)
    )
    support = mu > 0
    top = r[support].max()
    kl_max = float(-np.log(mu[support & (r == top)].sum()))
    target = min(requested, 0.95 * kl_max)
    if target <= 0:
        score = best_of_k_win_rate(r, mu, mu, k)
        return CtrlFit(
            mu.copy(),
            "none",
            None,
            None,
            0.0,
            requested,
            score,
            "the top reward holds all of the reference's mass: pi = mu",
        )
    best: CtrlFit | None = None
    for transform, tt in grid:
        beta = beta_for_kl(r, mu, target, t=tt, transform=transform)
        pi = ctrl_policy(r, mu, t=tt, beta=beta, transform=transform)
        score = best_of_k_win_rate(r, pi, mu, k)
        if best is None or score > best.score + 1e-12:
            best = CtrlFit(pi, transform, tt, beta, _kl(pi, mu), requested, score)
    assert best is not None
    return best
