"""The k = 1 equilibrium (maximal lottery) by linear programming, never slower than one LP.

At ``k = 1`` the pick probability is linear, ``g_pi = M pi`` with the majority matrix
``M[i, j] = sum_t w_t (1[U_ti > U_tj] + 1/2 1[U_ti = U_tj])`` (theory.md section 4), so the
game restricted to a candidate set ``C`` is solved *exactly* by one LP:

    min s  subject to  M_CC pi_C <= s 1,  sum(pi_C) = 1,  pi_C >= 0      (HiGHS)

:func:`solve_k1` is a double oracle over such LPs (McMahan, Gordon & Blum, ICML 2003):

1. ``C`` = the 32 responses most picked against the uniform policy; solve its LP.
2. Check ``g = M pi`` on all ``N`` responses in ``O(T N)`` (no ``N x N`` matrix). Stop when
   the exploitability ``max_i g_i - 1/2`` is ``<= tol``.
3. If the responses that beat the restricted solution (``g_i > 1/2``), together with ``C``,
   pass ``N / 4``, the support is a large part of the pool (the adversarial cyclic
   populations of docs/benchmarks.md: about 3/4 of N): growing ``C`` over further rounds
   would re-solve ever larger LPs, so the whole game is solved at once, as the plain LP
   baseline does. Otherwise the violators are added (at most doubling ``C``) and the
   loop repeats.

Only the rows of ``M`` for new candidates are computed; ``M`` is skew up to 1/2
(``M_ij + M_ji = 1`` for ``i != j``, ties included), so each block is computed once and
mirrored, which halves the ``O(T N^2)`` cost of the full matrix, and HiGHS runs without
presolve, which finds nothing to remove in a dense game matrix and cost 25-40% of the LP's
time on the cyclic populations (N = 256-512). The full-game path is then the baseline's LP
made cheaper, on a matrix built in about half its time, so ``k = 1`` is no slower than
one HiGHS LP on these populations; with small supports it is much faster (it never builds
the ``N x N`` matrix).
The returned policy's certificate is measured by the caller (``solve_multiplayer``); when
HiGHS's answer misses ``tol`` (rounding), :func:`solve_k1` reports it as not converged so
the caller can fall back to its SLP refinement.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.optimize

from .population import Population, _ipow, _masses, _pick

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

__all__ = ["solve_k1"]

#: Initial candidate set size.
K1_INITIAL = 32
#: Solve the whole game once ``|C| + violators`` passes this share of ``N``.
K1_FULL_SHARE = 0.25
#: Entries per chunk of the comparison tensor (types x rows x columns) in ``_majority_block``.
_CHUNK = 8_000_000


def _majority_block(pop: Population, rows: IntArray, cols: IntArray) -> FloatArray:
    """``M[rows][:, cols]``, shape (len(rows), len(cols)); ``O(T |rows| |cols|)``."""
    u, w = pop.utilities, pop.weights
    ur, uc = u[:, rows], u[:, cols]
    out = np.zeros((rows.size, cols.size))
    chunk = max(1, _CHUNK // max(1, rows.size * cols.size))
    ties = pop._levels.has_ties
    for t0 in range(0, u.shape[0], chunk):
        t1 = min(u.shape[0], t0 + chunk)
        a, b = ur[t0:t1, :, None], uc[t0:t1, None, :]
        out += np.einsum("t,tij->ij", w[t0:t1], a > b, optimize=False)
        if ties:
            out += 0.5 * np.einsum("t,tij->ij", w[t0:t1], a == b, optimize=False)
    return out


def _extend_majority(
    pop: Population, m_cc: FloatArray, cand: IntArray, new: IntArray
) -> FloatArray:
    """``M`` on ``cand + new`` from ``M`` on ``cand``: new rows computed, new columns mirrored."""
    c, n_new = cand.size, new.size
    out = np.empty((c + n_new, c + n_new))
    out[:c, :c] = m_cc
    # blocks of the new rows: each pair of blocks (I <= J) computed once, (J, I) mirrored
    size = max(64, -(-n_new // 8))  # at most 8 x 8 blocks: 36 of 64 computed
    starts = list(range(0, n_new, size))
    out[c:, :c] = _majority_block(pop, new, cand)
    for i0 in starts:
        rows = new[i0 : i0 + size]
        for j0 in starts[starts.index(i0) :]:
            block = _majority_block(pop, rows, new[j0 : j0 + size])
            out[c + i0 : c + i0 + rows.size, c + j0 : c + j0 + block.shape[1]] = block
            if j0 != i0:
                out[c + j0 : c + j0 + block.shape[1], c + i0 : c + i0 + rows.size] = (
                    1.0 - block.T
                )
    out[:c, c:] = 1.0 - out[c:, :c].T
    out[np.diag_indices(c + n_new)] = 0.5
    return out


def _lp(m_cc: FloatArray) -> FloatArray | None:
    """Maximal lottery of the restricted game: ``min s`` s.t. ``M pi <= s``, simplex."""
    c = m_cc.shape[0]
    res = scipy.optimize.linprog(
        np.r_[np.zeros(c), 1.0],
        A_ub=np.hstack([m_cc, -np.ones((c, 1))]),
        b_ub=np.zeros(c),
        A_eq=np.r_[np.ones(c), 0.0][None, :],
        b_eq=[1.0],
        bounds=[(0.0, None)] * c + [(None, None)],
        method="highs",
        options={"presolve": False},  # nothing to presolve in a dense game matrix
    )
    if res.status != 0 or res.x is None:
        return None
    pi = np.clip(res.x[:c], 0.0, None)
    total = pi.sum()
    return pi / total if np.isfinite(total) and total > 0 else None


def _initial(pop: Population, size: int) -> IntArray:
    """The ``size`` responses most picked against the uniform policy (``g_uniform``)."""
    n = pop.n_responses
    a, e = _masses(pop, np.full(n, 1.0 / n))
    score = pop.weights @ ((_ipow(a + e, 2) - _ipow(a, 2)) / e)
    return np.argsort(-score, kind="stable")[:size].astype(np.intp)


def solve_k1(
    pop: Population, tol: float, max_iter: int
) -> tuple[FloatArray, int, str, bool]:
    """A maximal lottery of ``pop`` (the ``k = 1`` equilibrium) by a double oracle of LPs.

    Parameters
    ----------
    pop : Population
    tol : float
        Target exploitability ``max_i g_i - 1/2``.
    max_iter : int
        Cap on the number of LPs solved.

    Returns
    -------
    (policy (N,), LPs solved, method, reached)
        ``reached`` is True when the returned policy's exploitability is ``<= tol``; the
        caller recomputes the certificate on the returned array either way.
    """
    n = pop.n_responses
    cand = _initial(pop, min(n, K1_INITIAL))
    m_cc = _extend_majority(pop, np.empty((0, 0)), np.empty(0, dtype=np.intp), cand)
    best, best_ex, n_lp, method = (
        np.full(n, 1.0 / n),
        np.inf,
        0,
        "double-oracle LP (HiGHS)",
    )
    while n_lp < max_iter:
        n_lp += 1
        pi_c = _lp(m_cc)
        if pi_c is None:
            break
        pi = np.zeros(n)
        pi[cand] = pi_c
        g = _pick(pop, pi, 1)
        ex = max(0.0, float(g.max()) - 0.5)
        if ex < best_ex:
            best, best_ex = pi, ex
        if ex <= tol or cand.size == n:
            break
        outside = np.ones(n, dtype=bool)
        outside[cand] = False
        excess = np.where(outside, g - 0.5, -np.inf)
        violators = np.flatnonzero(excess > 0.5 * tol)
        if violators.size == 0:
            break  # the remaining violation is inside C: LP rounding; the caller refines
        if cand.size + violators.size > K1_FULL_SHARE * n:
            new = np.flatnonzero(outside).astype(np.intp)
            method = "double-oracle LP (HiGHS), whole game"
        else:
            new = violators[np.argsort(-excess[violators], kind="stable")][
                : max(16, cand.size)
            ]
        m_cc = _extend_majority(pop, m_cc, cand, new)
        cand = np.concatenate([cand, new])
    return best, n_lp, method, bool(best_ex <= tol)
