"""Symmetric equilibria of the (k+1)-player alignment game (theory.md sections 3-4).

* :func:`solve_multiplayer` -- the U-alignment policy ``pi*`` with
  ``max_i g_{pi*}(i) <= 1/(k+1)`` (``beta = 0``), or the KL-regularised equilibrium
  ``pi = softmax(log mu + g_pi / beta)`` (``beta > 0``).
* :func:`solve_nlhf` -- the ``k = 1`` case: the maximal lottery (NLHF).

The Hedge / optimistic-Hedge dynamics the paper analyses are in
:mod:`workers.policies.self_play`.

Every :class:`Solution` carries a certificate measured on the returned policy: its
exploitability ``e_k(pi) = max_i g_pi(i) - 1/(k+1)`` and, for ``beta > 0``, the fixed-point
residual ``||pi - softmax(log mu + g_pi / beta)||_1``. ``converged`` is True only when that
certificate is ``<= tol``.

Algorithms
----------
``beta = 0``: ``min_{pi in simplex} max_i g_pi(i)`` is convex (each ``g_{pi,t}(i)`` is
convex in ``pi``) with optimal value exactly ``1/(k+1)``, and its solution has a small
support on which ``g = 1/(k+1)``. The solver is a *double oracle* around *sequential
linear programming (SLP) with a line search*:

1. Candidates ``C``: the responses most picked against the uniform policy.
2. On the game restricted to ``C`` (a population of ``T`` types over ``|C|`` responses),
   minimise ``F = max_{i in C} g_i``: linearise ``g`` with its exact Jacobian (theory.md
   section 2, through ``A`` and ``E``) and minimise the linear model
   ``max_i g_i + J_i (y - pi)`` over the simplex -- first by an active-set method that
   equalises the model on a support (linear solves of size ``|S| + 1``, warm-started from
   the current support; its first solve is Newton's step for ``g_S = const``), with the
   HiGHS LP as the fallback. By convexity the model is a lower bound, ``y - pi`` is a
   descent direction, and a backtracking line search on ``F`` always makes progress; near
   the solution full steps are taken and convergence is quadratic.
3. Evaluate ``g`` on all ``N`` responses (``O(T N)``); add the most violating responses to
   ``C`` (as many as violate strongly, at most doubling ``C``; never duplicates of
   candidates, which share their ``g``) and repeat until the exploitability on the full
   game is ``<= tol``. Once ``C`` would exceed ``N / 2`` it becomes the whole pool. If the
   restricted solver stalls, a few hundred optimistic-Hedge steps are tried before giving
   up; the best policy seen is returned either way, with its true certificate.

Cost per inner step: ``O(T |C|^2)`` for the Jacobian (at ``k = 1`` it is the majority
matrix, independent of ``pi``) plus a dense linear solve or LP of size ``|C|``; per outer
round ``O(T N)``. Fast when the equilibrium's support is small (tens to a few hundred
responses, as on the benchmark populations); populations whose support is most of ``N``
(cyclic preferences) cost about as much as the full LP at ``k = 1`` and seconds at
``k > 1`` for ``N = 512`` (docs/benchmarks.md).

``beta > 0``: Newton-Krylov on the fixed point in log space,
``F(z) = z - log mu - g_{softmax(z)} / beta``, with exact Jacobian-vector products, GMRES
preconditioned by the dense Jacobian on the high-mass responses, a backtracking line
search on the reported residual, and continuation in ``beta`` as a fallback.

References
----------
Cai & Zheng, arXiv 2601.08777 (2026), theory.md sections 3-4; K. Madsen, "An algorithm for
minimax solution of overdetermined systems of non-linear equations", IMA J. Appl. Math. 16
(1975), for SLP on minimax problems; double oracle: McMahan, Gordon & Blum, ICML 2003.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.optimize
import scipy.sparse.linalg

from . import _validation as v
from .lp import solve_k1
from .population import (
    Population,
    _exploitability,
    _ipow,
    _jacobian_block,
    _masses,
    _pick,
    _pick_jacobian,
    _pick_partials,
    _softmax,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

__all__ = [
    "Solution",
    "solve_multiplayer",
    "solve_nlhf",
]


@dataclass(frozen=True, eq=False)
class Solution:
    """A solver's answer with its certificate, all measured on ``policy`` itself.

    Attributes
    ----------
    policy : ndarray, shape (N,)
        The returned policy (on the simplex).
    exploitability : float
        ``e_k(policy) = max_i g_policy(i) - 1/(k+1)`` (theory.md section 3).
    residual : float
        The certificate compared with ``tol``: the exploitability when ``beta = 0``, the
        fixed-point residual ``||pi - softmax(log mu + g_pi / beta)||_1`` when ``beta > 0``.
    n_iter : int
        Inner iterations used (LP / Newton steps for ``beta = 0``, Newton steps for
        ``beta > 0``).
    converged : bool
        True exactly when ``residual <= tol``.
    k, beta, tol : int, float, float
        The problem solved and the tolerance asked for.
    support : ndarray of int
        Indices with ``policy > 0``.
    method : str
        The algorithm that produced ``policy``.
    seconds : float
        Wall-clock time of the solve.
    """

    policy: FloatArray
    exploitability: float
    residual: float
    n_iter: int
    converged: bool
    k: int
    beta: float
    tol: float
    support: IntArray = field(repr=False)
    method: str
    seconds: float


# ======================================================================================
# beta = 0: double oracle around trust-region SLP
# ======================================================================================


@dataclass
class _Budget:
    """Counts inner iterations against ``max_iter``."""

    limit: int
    used: int = 0

    @property
    def left(self) -> int:
        return self.limit - self.used


def _unique_columns(u: FloatArray, idx: IntArray) -> IntArray:
    """Drop responses whose utility column duplicates an earlier one in ``idx`` (keeps order)."""
    if idx.size <= 1:
        return idx
    _, first = np.unique(u[:, idx].T, axis=0, return_index=True)
    return idx[np.sort(first)]


def _lp_model(
    jac: FloatArray, g: FloatArray, pi: FloatArray
) -> tuple[FloatArray, float] | None:
    """Minimise the linear model ``max_i g_i + J_i (y - pi)`` over the simplex with HiGHS.

    ``min_{y, s} s  subject to  J y - s <= J pi - g,  sum(y) = 1,  y >= 0``. Returns
    ``(y, model value)`` or ``None`` if the LP solver fails.
    """
    c = pi.size
    a_ub = np.empty((c, c + 1))
    a_ub[:, :c] = jac
    a_ub[:, c] = -1.0
    bounds = np.zeros((c + 1, 2))
    bounds[:c, 1] = 1.0
    bounds[c] = (-np.inf, np.inf)
    a_eq = np.ones((1, c + 1))
    a_eq[0, c] = 0.0
    cost = np.zeros(c + 1)
    cost[c] = 1.0
    # bounds: an (n, 2) array of (min, max) pairs, as scipy documents; its stubs want pairs
    res = scipy.optimize.linprog(  # type: ignore[call-overload]
        cost,
        A_ub=a_ub,
        b_ub=jac @ pi - g,
        A_eq=a_eq,
        b_eq=[1.0],
        bounds=bounds,
        method="highs",
    )
    if res.status != 0 or res.x is None:
        return None
    y = np.clip(res.x[:c], 0.0, None)
    total = y.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    return y / total, float(res.x[c])


def _active_set_model(
    jac: FloatArray,
    g: FloatArray,
    pi: FloatArray,
    support: IntArray,
    max_changes: int = 60,
) -> tuple[FloatArray, float] | None:
    """Minimise the linear model by an active-set method on the support (no LP).

    Uses the equilibrium's structure: on the support the (linearised) pick probabilities
    are equal. Solves ``g_S + J_S (y - pi) = s 1``, ``sum(y_S) = 1``, ``y = 0`` off ``S``
    (a bordered linear system of size ``|S| + 1``); drops responses that come out
    negative, adds those whose model value exceeds ``s``, and repeats. The first solve is
    the Newton step for the current support. Returns ``(y, s)`` once ``y >= 0`` and no
    model value exceeds ``s``, else ``None``.
    """
    base = g - jac @ pi  # model: m(y) = base + J y
    for _ in range(max_changes):
        n_s = support.size
        if n_s == 0:
            return None
        mat = np.zeros((n_s + 1, n_s + 1))
        mat[:n_s, :n_s] = jac[np.ix_(support, support)]
        mat[:n_s, n_s] = -1.0
        mat[n_s, :n_s] = 1.0
        rhs = np.empty(n_s + 1)
        rhs[:n_s] = -base[support]
        rhs[n_s] = 1.0
        try:
            sol = np.linalg.solve(mat, rhs)
        except np.linalg.LinAlgError:
            return None
        y_s, s = sol[:n_s], float(sol[n_s])
        if not np.all(np.isfinite(sol)):
            return None
        if np.any(y_s < 0.0):
            # drop the most negative response only (dropping all at once can cycle)
            support = np.delete(support, int(np.argmin(y_s)))
            continue
        y = np.zeros_like(pi)
        y[support] = y_s
        model = base + jac @ y
        slack = 1e-13 * max(1.0, abs(s))
        viol = np.flatnonzero(model > s + slack)
        if viol.size == 0:
            return y, s
        worst = viol[np.argsort(-model[viol], kind="stable")][
            : max(1, support.size // 4)
        ]
        support = np.union1d(support, worst)
    return None


def _restricted_minimax(
    sub: Population, k: int, pi: FloatArray, target: float, budget: _Budget
) -> tuple[FloatArray, float, bool]:
    """Minimise ``F(pi) = max_i g_i(pi)`` over the simplex of the restricted game ``sub``.

    Sequential linear programming with a line search: the linear model
    ``max_i g_i + J_i (y - pi)`` is minimised over the simplex (active-set linear solves
    warm-started from the current support, HiGHS as the fallback); since each ``g_i`` is
    convex the model is a lower bound and ``y - pi`` a descent direction, so backtracking
    on ``F`` always makes progress. Full steps are taken near the solution, where the
    iteration is Newton's method on the equalities ``g_S = 1/(k+1)`` (quadratic
    convergence). Stops when the restricted exploitability is ``<= target``, when the
    budget is spent, or when no step makes progress. Returns ``(pi, gap, stalled)``.
    """
    vstar = 1.0 / (k + 1)
    g = _pick(sub, pi, k)
    gap = float(g.max()) - vstar
    support = np.flatnonzero(pi > 0)
    while gap > target and budget.left > 0:
        budget.used += 1
        jac = _pick_jacobian(sub, pi, k)
        model = _active_set_model(jac, g, pi, support)
        if model is None or model[1] - vstar >= gap:
            model = _lp_model(jac, g, pi)
        if model is None:
            return pi, gap, True
        y, s = model
        predicted = gap - (s - vstar)
        if predicted <= 0:
            return pi, gap, True
        step = y - pi
        t = 1.0
        for _ in range(30):
            cand = pi + t * step
            cand = np.clip(cand, 0.0, None)
            cand /= cand.sum()
            gc = _pick(sub, cand, k)
            gap_c = float(gc.max()) - vstar
            if gap_c <= gap - 1e-4 * t * predicted:
                break
            t *= 0.5
        else:
            return pi, gap, True
        pi, g, gap = cand, gc, gap_c
        support = np.flatnonzero(y > 0) if t == 1.0 else np.flatnonzero(pi > 0)
    return pi, gap, False


def _restricted_hedge(
    sub: Population, k: int, pi: FloatArray, n_steps: int
) -> FloatArray:
    """Fallback: optimistic Hedge on the restricted game, returns the best iterate."""
    vstar = 1.0 / (k + 1)
    with np.errstate(divide="ignore"):
        z = np.log(np.maximum(pi, 1e-300))
    g_prev = _pick(sub, pi, k)
    best, best_gap = pi, float(g_prev.max()) - vstar
    eta = 4.0 * sub.n_responses
    for _ in range(n_steps):
        p = _softmax(z)
        g = _pick(sub, p, k)
        gap = float(g.max()) - vstar
        if gap < best_gap:
            best, best_gap = p, gap
        z += eta * (2.0 * g - g_prev)
        g_prev = g
    return best


def _initial_candidates(pop: Population, k: int, size: int) -> IntArray:
    """The ``size`` responses most picked against the uniform policy (deduplicated).

    Ranks by ``sum_t w_t ((A+E)^{k+1} - A^{k+1}) / E``, which is ``(k+1) g_uniform(i)``
    (the closed form of theory.md section 2; its rounding is irrelevant for a ranking).
    """
    n = pop.n_responses
    a, e = _masses(pop, np.full(n, 1.0 / n))
    score = pop.weights @ ((_ipow(a + e, k + 1) - _ipow(a, k + 1)) / e)
    order = np.argsort(-score, kind="stable")
    cand = _unique_columns(pop.utilities, order[: min(n, 2 * size)])
    return cand[:size]


def _solve_unregularised(
    pop: Population, k: int, tol: float, max_iter: int | None
) -> tuple[FloatArray, int, str]:
    """Double oracle around SLP; returns ``(policy, n_iter, method)``."""
    n = pop.n_responses
    vstar = 1.0 / (k + 1)
    if n == 1:
        return np.ones(1), 0, "trivial"
    budget = _Budget(max_iter if max_iter is not None else 100 + 20 * n)
    cand = _initial_candidates(pop, k, min(n, 32 if k == 1 else 4 * (k + 1)))
    pi_c = np.full(cand.size, 1.0 / cand.size)
    best_pi, best_ex = None, np.inf
    method = "double-oracle SLP"
    final_target = max(1e-3 * tol, 1e-15)
    target = max(final_target, 1e-3)
    while True:
        sub = pop.subset(cand)
        pi_c, gap_c, stalled = _restricted_minimax(sub, k, pi_c, target, budget)
        if stalled and gap_c > max(target, 0.5 * tol):
            pi_c = _restricted_hedge(sub, k, pi_c, 200)
            method = "double-oracle SLP + hedge fallback"
        pi = np.zeros(n)
        pi[cand] = pi_c
        g = _pick(pop, pi, k)
        ex = max(0.0, float(g.max()) - vstar)
        if ex < best_ex:
            best_pi, best_ex = pi, ex
        if ex <= tol or budget.left <= 0:
            break
        growth = _violating_responses(pop, cand, g, vstar, tol)
        if growth.new.size == 0:
            # the remaining violation is inside C: solve the restricted game tightly
            if target <= final_target or stalled:
                break
            target = final_target
            continue
        cand = np.concatenate([cand, growth.new])
        pi_c = np.concatenate([pi_c, np.zeros(growth.new.size)])
        target = max(final_target, min(1e-2 * growth.violation, 1e-4))
    assert best_pi is not None
    return best_pi, budget.used, method


class _Growth(NamedTuple):
    """Responses the oracle adds to the candidate set, and the largest violation outside it."""

    new: IntArray
    violation: float


def _violating_responses(
    pop: Population, cand: IntArray, g: FloatArray, vstar: float, tol: float
) -> _Growth:
    """The oracle of the double oracle: responses outside ``cand`` picked too often.

    ``g`` is the pick probability of the current policy on all ``N`` responses. Returns the
    strongest violators (``g - 1/(k+1) > tol / 2``) to add, none of them a duplicate of a
    candidate, or every other distinct response once ``C`` would exceed half the pool.
    """
    n = pop.n_responses
    outside = np.ones(n, dtype=bool)
    outside[cand] = False
    excess = np.where(outside, g - vstar, -np.inf)
    viol_out = float(excess.max())
    violators = np.flatnonzero(excess > 0.5 * tol)
    violators = violators[np.argsort(-excess[violators], kind="stable")]
    # grow C geometrically while many responses violate strongly (large supports),
    # a few at a time near the end (small supports)
    strong = int(np.count_nonzero(excess > 0.25 * viol_out))
    n_add = min(max(8, strong), max(16, cand.size))
    # duplicates of candidates (identical utility columns) share their g: never add them
    new = _unique_columns(pop.utilities, np.concatenate([cand, violators[: 2 * n_add]]))
    new = new[cand.size : cand.size + n_add]
    if new.size and 2 * (cand.size + new.size) > n:
        # the support is a large part of the pool: restrict no more, take every
        # (distinct) response at once instead of growing C over further rounds
        rest = np.flatnonzero(outside)
        new = _unique_columns(pop.utilities, np.concatenate([cand, rest]))[cand.size :]
    return _Growth(new, viol_out)


# ======================================================================================
# beta > 0: Newton-Krylov on the KL-regularised fixed point
# ======================================================================================


def _fixed_point_residual(
    pop: Population, pi: FloatArray, k: int, beta: float, log_mu: FloatArray
) -> float:
    """``||pi - softmax(log mu + g_pi / beta)||_1`` (theory.md section 3)."""
    y = _softmax(log_mu + _pick(pop, pi, k) / beta)
    return float(np.abs(pi - y).sum())


def _head(pi: FloatArray, cap: int) -> IntArray:
    """Indices of the largest entries of ``pi`` holding all but ``1e-13`` of the mass."""
    order = np.argsort(-pi, kind="stable")
    tail = np.cumsum(pi[order][::-1])[::-1]  # mass from position j on
    h = int(np.searchsorted(-tail, -1e-13, side="left"))
    return order[: max(1, min(cap, max(h, 1)))]


_HEAD_CAP = 256


@dataclass(frozen=True, eq=False)
class _FixedPointIterate:
    """An iterate ``z`` of the Newton-Krylov solve and what the next step needs.

    ``pi = softmax(z)``; ``da``, ``de`` (T, N) are the partials of ``g_pi`` from
    ``_pick_partials``; ``target_z = log mu + g_pi / beta``; ``res`` is the residual
    ``||pi - softmax(target_z)||_1``.
    """

    z: FloatArray
    pi: FloatArray
    da: FloatArray
    de: FloatArray
    target_z: FloatArray
    res: float


def _iterate(
    pop: Population, k: int, beta: float, log_mu: FloatArray, z: FloatArray
) -> _FixedPointIterate:
    pi = _softmax(z)
    g, da, de = _pick_partials(pop, pi, k)
    gw = pop.weights @ g
    target_z = log_mu + gw / beta
    res = float(np.abs(pi - _softmax(target_z)).sum())
    return _FixedPointIterate(z, pi, da, de, target_z, res)


def _newton_krylov_regularised(
    pop: Population,
    k: int,
    beta: float,
    log_mu: FloatArray,
    z: FloatArray,
    tol: float,
    budget: _Budget,
) -> tuple[FloatArray, float]:
    """Solve ``z = log mu + g_{softmax(z)} / beta`` (up to a constant) from ``z``.

    Returns the final logits and the residual ``||pi - softmax(log mu + g/beta)||_1``.
    """
    it = _iterate(pop, k, beta, log_mu, z)
    while it.res > tol and budget.left > 0:
        budget.used += 1
        step = _newton_step(pop, it, beta)
        accepted = _line_search(pop, k, beta, log_mu, it, step)
        if accepted is None:
            break
        it = replace(accepted, z=accepted.z - accepted.z.max())
    return it.z, it.res


def _newton_step(pop: Population, it: _FixedPointIterate, beta: float) -> FloatArray:
    """Newton step for ``F(z) = z - target_z`` (centred), by GMRES with exact products.

    The Jacobian is ``I - J D_pi / beta`` with ``D_pi = diag(pi) - pi pi^T``; it is
    factorised densely on the high-mass responses, which solves it outright when they are all
    of them and preconditions GMRES otherwise. Falls back to ``-F`` if the step is not finite.
    """
    n = pop.n_responses
    pi = it.pi
    f = it.z - it.target_z
    f -= np.dot(pi, f)
    head = _head(pi, _HEAD_CAP)
    jac_hh = _jacobian_block(pop, head, head, it.da, it.de)
    d_hh = np.diag(pi[head]) - np.outer(pi[head], pi[head])
    block = np.eye(head.size) - jac_hh @ d_hh / beta
    try:
        lu = scipy.linalg.lu_factor(block, check_finite=False)
    except (ValueError, np.linalg.LinAlgError):
        lu = None
    if head.size == n and lu is not None:
        step = -scipy.linalg.lu_solve(lu, f[head])
        full = np.zeros(n)
        full[head] = step
        step = full
    else:
        step = _gmres_step(pop, it, beta, f, head, lu)
    if not np.all(np.isfinite(step)):
        step = -f
    return step


def _gmres_step(
    pop: Population,
    it: _FixedPointIterate,
    beta: float,
    f: FloatArray,
    head: IntArray,
    lu: tuple[FloatArray, npt.NDArray[np.signedinteger[Any]]] | None,
) -> FloatArray:
    """GMRES on ``(I - J D_pi / beta) step = -f``, preconditioned by the head's LU."""
    n = pop.n_responses
    pi = it.pi
    wda = pop.weights[:, None] * it.da
    wde = pop.weights[:, None] * it.de

    def jd(x: FloatArray) -> FloatArray:
        """``(I - J D_pi / beta) x`` with ``D_pi = diag(pi) - pi pi^T``."""
        d = pi * x - pi * np.dot(pi, x)
        a, e = _masses(pop, d, signed=True)
        jv = np.einsum("tn,tn->n", wda, a) + np.einsum("tn,tn->n", wde, e)
        out: FloatArray = x - jv / beta
        return out

    def precond(x: FloatArray) -> FloatArray:
        y = np.array(x, dtype=np.float64, copy=True)
        if lu is not None:
            y[head] = scipy.linalg.lu_solve(lu, x[head])
        return y

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=jd, dtype=np.float64)
    m_op = scipy.sparse.linalg.LinearOperator((n, n), matvec=precond, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step, _ = scipy.sparse.linalg.gmres(
            op,
            -f,
            M=m_op,
            rtol=min(1e-3, max(it.res, 1e-12)),
            restart=60,
            maxiter=4,
        )
    return step


def _line_search(
    pop: Population,
    k: int,
    beta: float,
    log_mu: FloatArray,
    it: _FixedPointIterate,
    step: FloatArray,
) -> _FixedPointIterate | None:
    """Backtracking on the reported residual: the first of ``z + step``, ``z + step / 2``, ...
    (40 tries) that lowers it by a fraction ``1e-4 t``; ``None`` when none does."""
    t = 1.0
    for _ in range(40):
        candidate = _iterate(pop, k, beta, log_mu, it.z + t * step)
        if candidate.res < (1.0 - 1e-4 * t) * it.res:
            return candidate
        t *= 0.5
    return None


def _solve_regularised(
    pop: Population,
    k: int,
    beta: float,
    mu: FloatArray,
    tol: float,
    max_iter: int | None,
) -> tuple[FloatArray, int, str]:
    """KL-regularised equilibrium; returns ``(policy, n_iter, method)``."""
    n = pop.n_responses
    keep = np.flatnonzero(mu > 0)
    sub = pop if keep.size == n else pop.subset(keep)
    log_mu = np.log(mu[keep])
    budget = _Budget(max_iter if max_iter is not None else 200)
    method = "newton-krylov"

    starts = [log_mu + _pick(sub, mu[keep] / mu[keep].sum(), k) / beta]
    if beta < 1.0 and sub.n_responses > 1:
        pi0, _, _ = _solve_unregularised(sub, k, 1e-10, None)
        g0 = _pick(sub, pi0, k)
        on = pi0 > 0
        offset = np.median(np.log(pi0[on]) - log_mu[on] - g0[on] / beta)
        z0 = log_mu + g0 / beta + offset
        z0[on] = np.log(pi0[on])
        starts.append(z0)
    best_z, best_res = None, np.inf
    for z0 in starts:
        r0 = _fixed_point_residual(sub, _softmax(z0), k, beta, log_mu)
        if r0 < best_res:
            best_z, best_res = z0, r0
    assert best_z is not None
    z, res = _newton_krylov_regularised(sub, k, beta, log_mu, best_z, tol, budget)
    if res > tol and budget.left > 0:
        # continuation: from a beta where the problem is easy down to the requested one
        method = "newton-krylov with beta continuation"
        betas = [beta * 4.0**j for j in range(12, 0, -1)]
        zc = log_mu + _pick(sub, mu[keep] / mu[keep].sum(), k) / betas[0]
        for b in [*betas, beta]:
            zc, rc = _newton_krylov_regularised(
                sub, k, b, log_mu, zc, tol if b == beta else 1e-10, budget
            )
        if rc < res:
            z, res = zc, rc
    pi = np.zeros(n)
    pi[keep] = _softmax(z)
    return pi, budget.used, method


# ======================================================================================
# public API
# ======================================================================================


def solve_multiplayer(
    pop: Population,
    k: int,
    *,
    beta: float = 0.0,
    reference: npt.ArrayLike | None = None,
    tol: float = 1e-9,
    max_iter: int | None = None,
) -> Solution:
    """Symmetric equilibrium of the (k+1)-player alignment game (theory.md section 3).

    ``beta = 0``: a policy ``pi*`` with ``max_i g_{pi*}(i) <= 1/(k+1) + tol``, so its
    robust win rate is ``f_{pi*}(k) >= k/(k+1) - tol`` against every single-output
    opponent. ``beta > 0``: the KL-regularised equilibrium
    ``pi = softmax(log mu + g_pi / beta)`` (Nash-MD style).

    Parameters
    ----------
    pop : Population
        ``T`` types over ``N`` responses.
    k : int
        Samples the policy shows, ``k >= 1`` (``k = 1`` is NLHF, see :func:`solve_nlhf`).
    beta : float, default 0.0
        KL strength, ``>= 0``.
    reference : array_like, shape (N,), optional
        Reference ``mu`` for ``beta > 0`` (default uniform); responses with ``mu = 0`` get
        no mass. Validated but unused when ``beta = 0``.
    tol : float, default 1e-9
        Target for the certificate (exploitability if ``beta = 0``, fixed-point residual
        otherwise), ``> 0``.
    max_iter : int, optional
        Cap on inner iterations (LP / Newton steps). Default: ``100 + 20 N`` for
        ``beta = 0``, 200 for ``beta > 0``.

    Returns
    -------
    Solution
        ``policy`` (N,) with its exploitability and residual recomputed on the returned
        array; ``converged`` is True only if ``residual <= tol``. A solver that runs out
        of iterations returns its best policy with ``converged=False``.

    Notes
    -----
    See the module docstring for the algorithms. For ``beta = 0`` the cost per outer
    round is ``O(T N)`` for the global check plus ``O(T |C|^2)`` and one LP of size
    ``|C|`` per inner step, where ``C`` (a little larger than the equilibrium's support)
    is the candidate set.

    Examples
    --------
    >>> from workers.policies import Population
    >>> pop = Population([[3, 2, 1], [1, 3, 2], [2, 1, 3]])  # Condorcet cycle
    >>> sol = solve_multiplayer(pop, 2)
    >>> sol.policy.round(6), sol.converged
    (array([0.333333, 0.333333, 0.333333]), True)
    """
    start = time.perf_counter()
    pop, k, beta, mu, tol, max_iter = v._iv_solver(
        pop, k, beta, reference, tol, max_iter
    )
    if (
        beta == 0.0 and k == 1
    ):  # an LP per round (workers/policies/lp.py); SLP if it misses tol
        pi, n_iter, method, reached = solve_k1(
            pop, tol, max_iter or 100 + 20 * pop.n_responses
        )
        if not reached:
            pi, n_iter, method = _solve_unregularised(pop, k, tol, max_iter)
    elif beta == 0.0:
        pi, n_iter, method = _solve_unregularised(pop, k, tol, max_iter)
    else:
        pi, n_iter, method = _solve_regularised(pop, k, beta, mu, tol, max_iter)
    pi = np.clip(pi, 0.0, None)
    pi /= pi.sum()
    pi.setflags(write=False)
    cert = _certificate(pop, pi, k, beta, mu)
    return Solution(
        policy=pi,
        exploitability=cert.exploitability,
        residual=cert.residual,
        n_iter=n_iter,
        converged=bool(cert.residual <= tol),
        k=k,
        beta=beta,
        tol=tol,
        support=np.flatnonzero(pi > 0),
        method=method,
        seconds=time.perf_counter() - start,
    )


class _Certificate(NamedTuple):
    exploitability: float
    residual: float


def _certificate(
    pop: Population, pi: FloatArray, k: int, beta: float, mu: FloatArray
) -> _Certificate:
    """Exploitability and the residual compared with ``tol``, measured on ``pi`` itself."""
    # the certificate goes through the same validation a caller's recomputation does, so
    # exploitability(pop, sol.policy, k) reproduces it exactly
    checked = v._check_simplex(pi, "policy", pop.n_responses)
    ex = _exploitability(pop, checked, k)
    if beta == 0.0:
        return _Certificate(ex, ex)
    with np.errstate(divide="ignore"):
        residual = _fixed_point_residual(pop, checked, k, beta, np.log(mu))
    return _Certificate(ex, residual)


def solve_nlhf(
    pop: Population,
    *,
    beta: float = 0.0,
    reference: npt.ArrayLike | None = None,
    tol: float = 1e-9,
    max_iter: int | None = None,
) -> Solution:
    """NLHF: the ``k = 1`` equilibrium, i.e. the maximal lottery (theory.md section 4).

    The two-player game with payoff ``P(y > y') = sum_t w_t [1(U_ty > U_ty') +
    1/2 1(U_ty = U_ty')]``; its value is exactly 1/2. With ``beta > 0`` the Nash-MD style
    regularised equilibrium ``pi = softmax(log mu + P pi / beta)``. Same parameters and
    certificate as :func:`solve_multiplayer` with ``k = 1``. With ties the maximal lottery
    may be non-unique; any returned policy satisfies the certificate.
    """
    return solve_multiplayer(
        pop, 1, beta=beta, reference=reference, tol=tol, max_iter=max_iter
    )
