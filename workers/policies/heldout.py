"""Held-out certificates: how a policy fitted on a pool fares against fresh responses.

A solver certifies its policy on the ``N`` pooled responses it was fitted on, but a real
opponent answers with a fresh sample. Keeping part of the pool out of fitting measures the
difference: the predicted robust win rate of the fitted policy against the worst held-out
response (or ``m``-multiset), with the same per-position tie rule (theory.md sections 1-2).

* :func:`split_pool` -- a reproducible split of a pool into fitted and held-out indices;
* :func:`held_out_certificate` -- the policy's robust win rate on the fitted pool, on the
  held-out responses, and over both (the adversary a study should use).

Both are pure NumPy; utilities are per type, with the same types (rows) for both parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from . import _validation as v
from .choice import Adversary, find_adversary
from .population import Population, _exploitability

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

__all__ = ["HeldOutCertificate", "PoolSplit", "held_out_certificate", "split_pool"]

#: Share of a pool kept out of fitting by default.
HELD_OUT_FRACTION = 0.25


class PoolSplit(NamedTuple):
    """Indices into a pool of ``n`` responses, each sorted ascending, disjoint, covering it."""

    fitted: IntArray
    held_out: IntArray


def split_pool(
    n: int,
    rng: np.random.Generator | int | None = None,
    *,
    fraction: float = HELD_OUT_FRACTION,
) -> PoolSplit:
    """Split a pool of ``n`` responses into fitted and held-out indices, reproducibly.

    ``round(fraction * n)`` responses (half up) are held out, chosen uniformly without
    replacement by ``rng``; at least one response is always fitted, and with ``n >= 2``
    and ``fraction > 0`` at least one is held out. The same ``rng`` seed gives the same
    split.

    Parameters
    ----------
    n : int
        Pool size, ``>= 1`` (indices ``0..n-1``: distinct texts or samples, as the caller
        counts them).
    rng : numpy.random.Generator, int or None
        Randomness source (an int is a seed; a study passes a seed derived from its own).
    fraction : float in [0, 1)
        Share held out (default 1/4).

    Returns
    -------
    PoolSplit
    """
    n = v._check_int(n, "n", 1)
    fraction = v._check_float(fraction, "fraction", minimum=0.0, strict=False)
    if fraction >= 1.0:
        raise ValueError(
            f"fraction must be < 1 (something must be fitted), got {fraction}"
        )
    gen = v._check_rng(rng)
    n_held = int(np.floor(fraction * n + 0.5))
    if fraction > 0 and n >= 2:
        n_held = max(n_held, 1)
    n_held = min(n_held, n - 1)
    held = np.sort(gen.choice(n, size=n_held, replace=False)).astype(np.intp)
    fitted = np.setdiff1d(np.arange(n, dtype=np.intp), held)
    return PoolSplit(fitted, held)


@dataclass(frozen=True)
class HeldOutCertificate:
    """A fitted policy's robust win rates on its pool and on held-out responses.

    Attributes
    ----------
    k, m : int
    pool_win_rate : float
        Worst case over ``m``-multisets of the *fitted* responses (for ``m = 1`` and a
        (k+1)-player equilibrium, ``k/(k+1) - exploitability``).
    held_out_win_rate : float
        Worst case over ``m``-multisets of the *held-out* responses: the prediction for a
        fresh opponent.
    win_rate : float
        Worst case over ``m``-multisets of both (the adversary to put in items);
        ``<= min(pool_win_rate, held_out_win_rate)``.
    pool_adversary, held_out_adversary, adversary : Adversary
        The opponents attaining them; indices into the *combined* columns
        ``[fitted..., held_out...]`` (``0..N_fit-1`` fitted, then held-out).
    exploitability : float
        ``max_i g(i) - 1/(k+1)`` over the fitted responses (the solver's certificate).
    exact : bool
        True when all three adversaries were found by enumeration.
    """

    k: int
    m: int
    pool_win_rate: float
    held_out_win_rate: float
    win_rate: float
    pool_adversary: Adversary
    held_out_adversary: Adversary
    adversary: Adversary
    exploitability: float
    exact: bool

    @property
    def generalisation_gap(self) -> float:
        """``pool_win_rate - held_out_win_rate``: what fitting on the pool overstates."""
        return self.pool_win_rate - self.held_out_win_rate


def _iv_held_out(
    fitted_utilities: Any, held_out_utilities: Any, weights: Any, policy: Any
) -> tuple[Population, FloatArray, int]:
    uf = v._check_finite_array(fitted_utilities, "fitted_utilities", 2)
    uh = v._check_finite_array(held_out_utilities, "held_out_utilities", 2)
    if uh.shape[0] != uf.shape[0]:
        raise ValueError(
            f"held_out_utilities must have the fitted pool's {uf.shape[0]} types (rows), got {uh.shape[0]}"
        )
    pop = Population(np.hstack([uf, uh]), weights)
    pi = v._check_simplex(policy, "policy", uf.shape[1])
    return pop, np.concatenate([pi, np.zeros(uh.shape[1])]), uf.shape[1]


def held_out_certificate(
    fitted_utilities: npt.ArrayLike,
    held_out_utilities: npt.ArrayLike,
    policy: npt.ArrayLike,
    k: int,
    m: int = 1,
    *,
    weights: npt.ArrayLike | None = None,
) -> HeldOutCertificate:
    """Predicted robust win rate of a fitted policy on its pool and on held-out responses.

    The population is the fitted responses' utilities ``U_fit`` (T, N_fit) next to the
    held-out ones ``U_held`` (T, N_held) for the same ``T`` types; ``policy`` lives on the
    fitted responses. With ``g`` the pick probability of theory.md section 2 on the
    combined columns,

    * ``m = 1``: ``pool = 1 - max_{i fitted} g(i)``, ``held_out = 1 - max_{j held} g(j)``;
    * ``m > 1``: the minimum of :func:`multiset_win_rate` over ``m``-multisets of each set
      (:func:`find_adversary`: exact enumeration, or a search with a certified bound);

    and ``win_rate`` over multisets of both sets, the worst opponent a study can field.

    Parameters
    ----------
    fitted_utilities : array_like, shape (T, N_fit)
    held_out_utilities : array_like, shape (T, N_held), N_held >= 1
    policy : array_like, shape (N_fit,)
        The fitted policy, on the simplex.
    k, m : int
        Policy draws and opponent outputs, both ``>= 1``.
    weights : array_like, shape (T,), optional
        Type weights (default uniform), as in :class:`Population`.

    Returns
    -------
    HeldOutCertificate
    """
    pop, pi, n_fit = _iv_held_out(fitted_utilities, held_out_utilities, weights, policy)
    k = v._check_int(k, "k", 1)
    m = v._check_int(m, "m", 1)
    n = pop.n_responses
    fitted, held = np.arange(n_fit), np.arange(n_fit, n)
    on_pool = find_adversary(pop, pi, k, m, candidates=fitted)
    on_held = find_adversary(pop, pi, k, m, candidates=held)
    overall = find_adversary(pop, pi, k, m)
    # a search (not an enumeration) over both sets may miss what a restricted one found
    overall = min((overall, on_pool, on_held), key=lambda adv: adv.win_rate)
    fit_pop = pop.subset(fitted)
    return HeldOutCertificate(
        k=k,
        m=m,
        pool_win_rate=on_pool.win_rate,
        held_out_win_rate=on_held.win_rate,
        win_rate=overall.win_rate,
        pool_adversary=on_pool,
        held_out_adversary=on_held,
        adversary=overall,
        exploitability=_exploitability(fit_pop, pi[:n_fit], k),
        exact=on_pool.exact and on_held.exact and overall.exact,
    )
