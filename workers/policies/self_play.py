"""Self-play dynamics of the (k+1)-player alignment game (theory.md section 3).

* :func:`self_play` -- Hedge, ``pi_{t+1} propto pi_t exp(eta g_{pi_t})``, or optimistic
  Hedge, ``exp(eta (2 g_{pi_t} - g_{pi_{t-1}}))``, with the exploitability of the last
  iterate, of the history mixture and of the time-averaged policy along the way.

These are the dynamics the paper analyses; the certified solvers are in
:mod:`workers.policies.equilibrium`.

References
----------
Cai & Zheng, arXiv 2601.08777 (2026), theory.md section 3 ("Self-play dynamics").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import _validation as v
from .population import Population, _exploitability, _pick, _softmax

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

__all__ = ["SelfPlayTrajectory", "self_play"]


@dataclass(frozen=True, eq=False)
class SelfPlayTrajectory:
    """Record of a self-play run (theory.md section 3, "Self-play dynamics").

    Attributes
    ----------
    steps : ndarray of int, shape (R,)
        Recorded step indices ``t`` (``0`` is the initial policy).
    policies : ndarray, shape (R, N)
        The last iterate ``pi_t`` at the recorded steps.
    average_policies : ndarray, shape (R, N)
        The time average ``(1/(t+1)) sum_{s<=t} pi_s`` at the recorded steps.
    exploitability_last : ndarray, shape (n_steps + 1,)
        ``e_k(pi_t)`` for every step.
    exploitability_mixture : ndarray, shape (n_steps + 1,)
        Exploitability of the *history mixture* (pick ``s <= t`` uniformly, then draw ``k``
        samples from ``pi_s``): ``max_i mean_{s<=t} g_{pi_s}(i) - 1/(k+1)``, which is
        ``Regret_{t+1} / (t+1)``; its worst-case win rate is ``k/(k+1)`` minus this.
    exploitability_average : ndarray, shape (R,)
        ``e_k`` of the time-averaged policy (a product policy) at the recorded steps.
    method, eta, k : str, float, int
    """

    steps: IntArray
    policies: FloatArray
    average_policies: FloatArray
    exploitability_last: FloatArray
    exploitability_mixture: FloatArray
    exploitability_average: FloatArray
    method: str
    eta: float
    k: int

    @property
    def policy(self) -> FloatArray:
        """The final iterate."""
        last: FloatArray = self.policies[-1]
        return last


def _hedge_step(
    z: FloatArray,
    g: FloatArray,
    g_prev: FloatArray | None,
    eta: float,
    optimistic: bool,
) -> FloatArray:
    """One (optimistic) Hedge update in log space (theory.md section 3).

    Hedge: ``pi_{t+1} propto pi_t exp(eta g_t)``; optimistic: ``exp(eta (2 g_t - g_{t-1}))``.
    """
    direction = 2.0 * g - g_prev if (optimistic and g_prev is not None) else g
    z = z + eta * direction
    shifted: FloatArray = z - z[np.isfinite(z)].max()
    return shifted


def self_play(
    pop: Population,
    k: int,
    *,
    method: str = "hedge",
    eta: float,
    n_steps: int,
    init: npt.ArrayLike | None = None,
    record_every: int = 1,
) -> SelfPlayTrajectory:
    """Self-play dynamics of the (k+1)-player game (theory.md section 3).

    ``pi_{t+1} propto pi_t exp(eta g_{pi_t})`` (``method="hedge"``) or
    ``pi_{t+1} propto pi_t exp(eta (2 g_{pi_t} - g_{pi_{t-1}}))`` (``"optimistic"``).

    Parameters
    ----------
    pop : Population
    k : int
        ``k >= 1``.
    method : {"hedge", "optimistic"}
    eta : float
        Step size, ``> 0``.
    n_steps : int
        Number of updates, ``>= 1``.
    init : array_like, shape (N,), optional
        Initial policy (default uniform). Responses with zero initial mass stay at zero.
    record_every : int, default 1
        Keep the policies (and the averaged policy's exploitability) every this many steps;
        the final step is always kept.

    Returns
    -------
    SelfPlayTrajectory
        Per-step exploitability of the last iterate and of the history mixture (whose
        worst-case win rate is ``k/(k+1) - Regret_t / t``), and the recorded policies.
        Cost ``O(T N)`` per step, plus one more evaluation per recorded step.
    """
    pop, k, eta, n_steps, pi, record_every = v._iv_self_play(
        pop, k, method, eta, n_steps, init, record_every
    )
    n = pop.n_responses
    vstar = 1.0 / (k + 1)
    with np.errstate(divide="ignore"):
        z = np.log(pi)
    g_prev: FloatArray | None = None
    g_sum = np.zeros(n)
    pi_sum = np.zeros(n)
    ex_last = np.empty(n_steps + 1)
    ex_mix = np.empty(n_steps + 1)
    steps, policies, averages, ex_avg = [], [], [], []
    for t in range(n_steps + 1):
        g = _pick(pop, pi, k)
        g_sum += g
        pi_sum += pi
        ex_last[t] = max(0.0, float(g.max()) - vstar)
        ex_mix[t] = max(0.0, float(g_sum.max()) / (t + 1) - vstar)
        if t % record_every == 0 or t == n_steps:
            avg = pi_sum / (t + 1)
            steps.append(t)
            policies.append(pi)
            averages.append(avg)
            ex_avg.append(_exploitability(pop, avg, k))
        if t == n_steps:
            break
        z = _hedge_step(z, g, g_prev, eta, method == "optimistic")
        g_prev = g
        pi = _softmax(z)
    return SelfPlayTrajectory(
        steps=np.asarray(steps, dtype=np.intp),
        policies=np.asarray(policies),
        average_policies=np.asarray(averages),
        exploitability_last=ex_last,
        exploitability_mixture=ex_mix,
        exploitability_average=np.asarray(ex_avg),
        method=method,
        eta=eta,
        k=k,
    )
