"""Populations of user types and the exact quantities of theory.md sections 1-2.

A :class:`Population` holds ``T`` user types with utilities ``U`` of shape ``(T, N)`` over
``N`` responses and weights ``w`` of shape ``(T,)``. A user shown a list of responses picks
a position of maximal utility, splitting ties uniformly *per position* (theory.md section 1).

Everything here is exact (no sampling). After one ``argsort`` per type, cached on the
population, each evaluation of the pick probability costs ``O(T * N)``.

References
----------
Cai & Zheng, *Asymptotic Universal Alignment*, arXiv 2601.08777 (2026); theory.md sections
1, 2 and 3 (pick probability, win rates, exploitability).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from . import _validation as v

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

__all__ = [
    "Population",
    "exploitability",
    "pick_probability",
    "robust_win_rate",
    "robust_win_rate_m",
    "sample_responses",
    "win_rate",
]

#: Largest ``n_multisets * T * m`` that :func:`robust_win_rate_m` enumerates.
ROBUST_M_MAX_WORK = 20_000_000


@dataclass(frozen=True)
class _Levels:
    """Per-type sort of the utilities, grouped into levels of equal utility.

    For response ``i`` of type ``t`` the level of ``i`` occupies sorted positions
    ``[lo, hi)``; ``lo_flat`` / ``hi_flat`` index the flattened ``(T, N + 1)`` array of
    prefix sums of the sorted policy, so that ``A = cs[lo]`` is the mass strictly below
    ``i`` and ``B = cs[hi]`` the mass below or tied with ``i``. Without ties
    ``hi = lo + 1`` and every response is its level's representative, so ``hi_flat`` and
    ``first`` are not stored.
    """

    #: (T, N) argsort of each row, ascending (the order within a level is irrelevant)
    order: IntArray
    #: (T, N) flat index of the level start in the (T, N + 1) prefix sums
    lo_flat: IntArray
    #: (T, N) flat index of the level end; None without ties
    hi_flat: IntArray | None
    #: (T, N) one representative response per level; None without ties
    first: npt.NDArray[np.bool_] | None
    has_ties: bool


@dataclass(frozen=True, eq=False)
class Population:
    """``T`` user types with utilities over ``N`` responses (theory.md section 1).

    Parameters
    ----------
    utilities : array_like, shape (T, N)
        ``U[t, i]`` is the utility of response ``i`` for type ``t``; higher is preferred.
        Only the order within a row matters; equal values are ties.
    weights : array_like, shape (T,), optional
        Type weights ``w_t``: finite, non-negative, summing to 1 within ``1e-9`` (then
        renormalised exactly). Counts are rejected rather than normalised silently.
        Defaults to uniform.

    Raises
    ------
    ValueError
        If ``utilities`` is not a finite, non-empty 2-D array or ``weights`` is not a valid
        probability vector of length ``T``. The message names the argument.

    Notes
    -----
    The arrays are copied and made read-only. Instances compare by identity.

    Examples
    --------
    >>> pop = Population([[3, 2, 1], [1, 3, 2], [2, 1, 3]])  # Condorcet cycle
    >>> pop.n_types, pop.n_responses
    (3, 3)
    """

    utilities: FloatArray
    weights: FloatArray = field(default=None)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        u, w = v._iv_population(self.utilities, self.weights)
        u.setflags(write=False)
        w.setflags(write=False)
        object.__setattr__(self, "utilities", u)
        object.__setattr__(self, "weights", w)

    @property
    def n_types(self) -> int:
        """Number of user types ``T``."""
        return int(self.utilities.shape[0])

    @property
    def n_responses(self) -> int:
        """Number of responses ``N``."""
        return int(self.utilities.shape[1])

    def subset(self, responses: npt.ArrayLike) -> Population:
        """The population restricted to the given response indices (same types and weights)."""
        idx = np.asarray(responses, dtype=np.intp)
        return Population(self.utilities[:, idx], self.weights)

    @cached_property
    def _levels(self) -> _Levels:
        return _build_levels(self.utilities)


def _build_levels(u: FloatArray) -> _Levels:
    t, n = u.shape
    order = np.argsort(u, axis=1)
    us = np.take_along_axis(u, order, axis=1)
    is_start = np.ones((t, n), dtype=bool)
    is_start[:, 1:] = us[:, 1:] != us[:, :-1]
    row = (np.arange(t) * (n + 1))[:, None]
    pos = np.broadcast_to(np.arange(n), (t, n))
    lo = np.empty((t, n), dtype=np.intp)
    if is_start.all():
        np.put_along_axis(lo, order, pos + row, axis=1)
        return _Levels(order, lo, None, None, False)
    start = np.maximum.accumulate(np.where(is_start, pos, 0), axis=1)
    is_end = np.ones((t, n), dtype=bool)
    is_end[:, :-1] = is_start[:, 1:]
    end = np.minimum.accumulate(np.where(is_end, pos + 1, n)[:, ::-1], axis=1)[:, ::-1]
    hi = np.empty((t, n), dtype=np.intp)
    first = np.empty((t, n), dtype=bool)
    np.put_along_axis(lo, order, start + row, axis=1)
    np.put_along_axis(hi, order, end + row, axis=1)
    np.put_along_axis(first, order, is_start, axis=1)
    return _Levels(order, lo, hi, first, True)


# --------------------------------------------------------------------------------------
# kernels (no validation; policies are assumed on the simplex)
# --------------------------------------------------------------------------------------


def _masses(
    pop: Population, pi: FloatArray, *, signed: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Masses ``A`` (strictly below) and ``E`` (tied, incl. itself) per type, shape (T, N).

    With ``signed=True`` the input may be any vector (a direction, for Jacobian-vector
    products) and ``E`` is not clipped at 0.
    """
    lv = pop._levels
    t, n = lv.order.shape
    cs = np.empty((t, n + 1))
    cs[:, 0] = 0.0
    np.cumsum(pi[lv.order], axis=1, out=cs[:, 1:])
    flat = cs.ravel()
    a = flat[lv.lo_flat]
    if lv.hi_flat is not None:
        e = flat[lv.hi_flat] - a
        if not signed:
            np.maximum(e, 0.0, out=e)
    else:
        e = np.broadcast_to(pi, (t, n))
    return a, e


def _gl_nodes(degree: int) -> tuple[FloatArray, FloatArray]:
    """Gauss-Legendre nodes/weights on [0, 1], exact for polynomials of ``degree``."""
    n = max(1, math.ceil((degree + 1) / 2))
    x, wq = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, wq / 2.0


def _ipow(x: FloatArray, k: int) -> FloatArray:
    """``x ** k`` for an integer ``k >= 0`` by repeated squaring (a new array)."""
    out: FloatArray | None = None
    base = x
    while True:
        if k & 1:
            out = (
                np.array(base, dtype=np.float64, copy=True)
                if out is None
                else np.multiply(out, base, out=out)
            )
        k >>= 1
        if not k:
            break
        base = base * base
    return np.ones_like(x, dtype=np.float64) if out is None else out


def _softmax(z: FloatArray) -> FloatArray:
    """``exp(z) / sum(exp(z))``, shifted by ``max(z)``: a policy from logits (solvers, self-play)."""
    p = np.exp(z - z.max())
    policy: FloatArray = p / p.sum()
    return policy


def _integral_power_pos(a: FloatArray, e: FloatArray, k: int) -> FloatArray:
    """``G(A, E) = int_0^1 (A + sE)^k ds`` for ``E > 0`` (so ``B = A + E > 0``).

    ``G = B^k * phi(r)`` with ``r = A / B`` in ``[0, 1)`` and
    ``phi(r) = (1 + r + ... + r^k) / (k + 1)``: a sum of non-negative terms (Horner), free
    of the cancellation in ``((A+E)^{k+1} - A^{k+1}) / ((k+1) E)``. For large ``k`` the
    equivalent ``-expm1((k+1) log1p(-E/B)) / ((k+1) E/B)`` is used (O(1) per entry).
    """
    b = a + e
    if k <= 24:
        r = a / b
        phi = r + 1.0
        for _ in range(k - 1):
            phi *= r
            phi += 1.0
        phi /= k + 1
    else:
        q = np.minimum(e / b, 1.0)
        with np.errstate(divide="ignore"):
            phi = -np.expm1((k + 1) * np.log1p(-q)) / ((k + 1) * q)
    return _ipow(b, k) * phi


def _integral_power(a: FloatArray, e: FloatArray, k: int) -> FloatArray:
    """``G(A, E) = int_0^1 (A + sE)^k ds`` elementwise for ``A, E >= 0`` (theory.md section 2).

    Equal to ``((A+E)^{k+1} - A^{k+1}) / ((k+1) E)``, and ``A^k`` where ``E = 0``.
    """
    if k == 1:
        return a + 0.5 * e
    g = _ipow(a, k)
    mask = e > 0.0
    if mask.any():
        g[mask] = _integral_power_pos(a[mask], e[mask], k)
    return g


def _pick_by_type(pop: Population, pi: FloatArray, k: int) -> FloatArray:
    """``g_{pi,t}(i)``, shape (T, N)."""
    a, e = _masses(pop, pi)
    if k == 1:
        return a + 0.5 * e
    if pop._levels.has_ties:
        return _integral_power(a, e, k)
    # no ties: E = pi(i), positive exactly on the support columns
    g = _ipow(a, k)
    cols = np.flatnonzero(pi > 0.0)
    g[:, cols] = _integral_power_pos(
        a[:, cols], np.broadcast_to(pi[cols], (a.shape[0], cols.size)), k
    )
    return g


def _pick(pop: Population, pi: FloatArray, k: int) -> FloatArray:
    """``g_pi(i) = sum_t w_t g_{pi,t}(i)``, shape (N,)."""
    return pop.weights @ _pick_by_type(pop, pi, k)


def _pick_partials(
    pop: Population, pi: FloatArray, k: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``G``, ``dG/dA`` and ``dG/dE`` per type and response, each shape (T, N).

    With ``B = A + E`` and ``r = A / B`` (``r = 0`` where ``B = 0``), the three polynomials
    of theory.md section 2 and their derivatives are sums of non-negative terms,
    evaluated by Horner's rule without cancellation:

    * ``G = B^k / (k+1) * sum_{i=0}^{k} r^i``,
    * ``dG/dA = int_0^1 k (A+sE)^{k-1} ds = B^{k-1} * sum_{i=0}^{k-1} r^i``,
    * ``dG/dE = int_0^1 k s (A+sE)^{k-1} ds = B^{k-1} / (k+1) * sum_{i=0}^{k-1} (k-i) r^i``.
    """
    a, e = _masses(pop, pi)
    b = a + e
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(b > 0.0, a / np.where(b > 0.0, b, 1.0), 0.0)
    p_a = np.ones_like(r)  # sum_{i<k} r^i
    p_e = np.ones_like(r)  # sum_{i<k} (k-i) r^i, Horner from the top coefficient 1
    for i in range(k - 2, -1, -1):
        p_a *= r
        p_a += 1.0
        p_e *= r
        p_e += k - i
    bk1 = _ipow(b, k - 1)
    da = bk1 * p_a
    de = bk1 * p_e / (k + 1)
    g = bk1 * b * (p_a * r + 1.0) / (k + 1)  # sum_{i<=k} r^i = r * p_a + 1
    return g, da, de


def _jacobian_block(
    pop: Population, rows: IntArray, cols: IntArray, da: FloatArray, de: FloatArray
) -> FloatArray:
    """Block ``J[rows][:, cols]`` of ``J[i, j] = d g_pi(i) / d pi(j)`` from the partials.

    ``J[i, j] = sum_t w_t (dG/dA_t(i) 1[U_tj < U_ti] + dG/dE_t(i) 1[U_tj = U_ti])``: the
    derivative of theory.md section 2 through ``A`` and ``E``. ``da``, ``de`` are the
    partials of shape (T, N) at the current policy. Costs ``O(T len(rows) len(cols))``;
    meant for restricted (small) blocks.
    """
    u = pop.utilities
    w = pop.weights
    ur, uc = u[:, rows], u[:, cols]
    wa = w[:, None] * da[:, rows]
    jac = np.zeros((rows.size, cols.size))
    chunk = max(1, 4_000_000 // max(1, rows.size * cols.size))
    ties = pop._levels.has_ties
    we = w[:, None] * de[:, rows]
    for t0 in range(0, u.shape[0], chunk):
        t1 = min(u.shape[0], t0 + chunk)
        jac += np.einsum(
            "ti,tij->ij",
            wa[t0:t1],
            uc[t0:t1, None, :] < ur[t0:t1, :, None],
            optimize=False,
        )
        if ties:
            jac += np.einsum(
                "ti,tij->ij",
                we[t0:t1],
                uc[t0:t1, None, :] == ur[t0:t1, :, None],
                optimize=False,
            )
    if not ties:  # within a type only a response ties with itself
        ri, ci = np.nonzero(rows[:, None] == cols[None, :])
        jac[ri, ci] += we.sum(axis=0)[ri]
    return jac


def _majority_matrix(pop: Population) -> FloatArray:
    """``M[i, j] = sum_t w_t (1[U_ti > U_tj] + 1/2 1[U_ti = U_tj])``, shape (N, N).

    The payoff of the NLHF game (theory.md section 4): ``g_pi = M pi`` at ``k = 1``, so
    ``M`` is also the Jacobian there, whatever ``pi``. Costs ``O(T N^2)``.
    """
    u, w = pop.utilities, pop.weights
    n = u.shape[1]
    out = np.zeros((n, n))
    chunk = max(1, 8_000_000 // (n * n))
    for t0 in range(0, u.shape[0], chunk):
        ut = u[t0 : t0 + chunk]
        out += np.einsum(
            "t,tij->ij",
            w[t0 : t0 + chunk],
            ut[:, :, None] > ut[:, None, :],
            optimize=False,
        )
        if pop._levels.has_ties:
            out += 0.5 * np.einsum(
                "t,tij->ij",
                w[t0 : t0 + chunk],
                ut[:, :, None] == ut[:, None, :],
                optimize=False,
            )
    if not pop._levels.has_ties:
        out[np.diag_indices(n)] = 0.5
    return out


def _pick_jacobian(pop: Population, pi: FloatArray, k: int) -> FloatArray:
    """Dense Jacobian ``J[i, j] = d g_pi(i) / d pi(j)``, shape (N, N); see ``_jacobian_block``."""
    if k == 1:
        return _majority_matrix(pop)
    _, da, de = _pick_partials(pop, pi, k)
    idx = np.arange(pop.n_responses)
    return _jacobian_block(pop, idx, idx, da, de)


def _win_rate_m(
    pop: Population, pi: FloatArray, k: int, sigma: FloatArray, m: int
) -> float:
    """Exact win rate of ``pi^{(x)k}`` against ``sigma^{(x)m}`` (closed form, see win_rate)."""
    lv = pop._levels
    a, e = _masses(pop, pi)
    b, f = _masses(pop, sigma)
    mask = e > 0.0 if lv.first is None else lv.first & (e > 0.0)
    if not mask.any():
        return 0.0
    am, em, bm, fm = a[mask], e[mask], b[mask], f[mask]
    wm = np.broadcast_to(pop.weights[:, None], mask.shape)[mask]
    s, wq = _gl_nodes(k - 1 + m)
    total = np.zeros_like(am)
    for sq, wqq in zip(s, wq, strict=True):
        total += wqq * (am + sq * em) ** (k - 1) * (bm + sq * fm) ** m
    return float(np.clip(np.sum(wm * k * em * total), 0.0, 1.0))


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def pick_probability(pop: Population, policy: npt.ArrayLike, k: int) -> FloatArray:
    """Probability that each response is picked next to ``k`` i.i.d. draws from ``policy``.

    For type ``t`` let ``A`` be the ``policy`` mass strictly below ``i`` and ``E`` the mass
    tied with ``i`` (including ``i``). Then (theory.md section 2)

    .. math:: g_{\\pi,t}(i) = \\int_0^1 (A + sE)^k ds = ((A+E)^{k+1} - A^{k+1}) / ((k+1) E),

    (``A^k`` when ``E = 0``) and ``g_pi(i) = sum_t w_t g_{pi,t}(i)``. Ties are split per
    position, so ``sum_i pi(i) g_pi(i) = 1/(k+1)`` exactly.

    Parameters
    ----------
    pop : Population
        ``T`` types over ``N`` responses.
    policy : array_like, shape (N,)
        The policy ``pi`` on the simplex (see :mod:`._validation` for the tolerance).
    k : int
        Number of i.i.d. draws from ``policy``, ``k >= 1``.

    Returns
    -------
    g : ndarray, shape (N,)
        ``g_pi(i)`` in ``[0, 1]``. Cost ``O(T N)`` after the cached per-type sort.

    Examples
    --------
    >>> pop = Population([[3, 2, 1], [1, 3, 2], [2, 1, 3]])
    >>> pick_probability(pop, [1/3, 1/3, 1/3], k=2).round(6)
    array([0.333333, 0.333333, 0.333333])
    """
    pop, pi, k = v._iv_policy_k(pop, policy, k)
    return _pick(pop, pi, k)


def win_rate(
    pop: Population, policy: npt.ArrayLike, k: int, opponent: npt.ArrayLike, m: int = 1
) -> float:
    """Probability that the user picks one of the policy's ``k`` positions among ``k + m``.

    The policy shows ``k`` i.i.d. draws from ``policy``, the opponent ``m`` i.i.d. draws
    from ``opponent``; the user picks a position of maximal utility, ties split uniformly
    per position (theory.md sections 1-2). For ``m = 1`` this is
    ``1 - sum_y sigma(y) g_pi(y)``. For general ``m``, conditioning on the top utility
    level ``l`` (policy masses ``a`` below / ``e`` at ``l``, opponent masses ``b`` / ``f``)
    and writing ``i / (i + j) = int_0^1 i s^{i+j-1} ds`` gives the closed form

    .. math:: W_t = \\sum_l \\int_0^1 k e_l (a_l + s e_l)^{k-1} (b_l + s f_l)^m ds,

    a polynomial of degree ``k + m - 1`` in ``s`` integrated exactly by Gauss-Legendre
    quadrature; ``W = sum_t w_t W_t``.

    Parameters
    ----------
    pop : Population
    policy : array_like, shape (N,)
        The policy ``pi``.
    k : int
        Draws from ``policy``, ``k >= 1``.
    opponent : array_like, shape (N,)
        The opponent's policy ``sigma``.
    m : int, default 1
        Draws from ``opponent``, ``m >= 1``.

    Returns
    -------
    float
        The win rate in ``[0, 1]``. Cost ``O(T N (k + m))``.
    """
    pop, pi, k, sigma, m = v._iv_win_rate(pop, policy, k, opponent, m)
    if m == 1:
        return float(np.clip(1.0 - sigma @ _pick(pop, pi, k), 0.0, 1.0))
    return _win_rate_m(pop, pi, k, sigma, m)


def robust_win_rate(pop: Population, policy: npt.ArrayLike, k: int) -> float:
    """Worst-case win rate ``f_pi(k) = 1 - max_i g_pi(i)`` over single-output opponents.

    The minimum over opponent policies is attained at a single response because the win
    rate is linear in the opponent (theory.md section 2). Parameters as in
    :func:`pick_probability`.
    """
    pop, pi, k = v._iv_policy_k(pop, policy, k)
    return float(1.0 - _pick(pop, pi, k).max())


def exploitability(pop: Population, policy: npt.ArrayLike, k: int) -> float:
    """Exploitability ``e_k(pi) = max_i g_pi(i) - 1/(k+1)`` (theory.md section 3).

    Zero exactly at a symmetric equilibrium of the (k+1)-player game; it is the certificate
    every solver in :mod:`workers.policies` reports. Since ``sum_i pi(i) g_pi(i) = 1/(k+1)``
    the value is ``>= 0``; a value below zero from rounding is reported as 0. Parameters as
    in :func:`pick_probability`.
    """
    pop, pi, k = v._iv_policy_k(pop, policy, k)
    return _exploitability(pop, pi, k)


def _exploitability(pop: Population, pi: FloatArray, k: int) -> float:
    return max(0.0, float(_pick(pop, pi, k).max()) - 1.0 / (k + 1))


def robust_win_rate_m(pop: Population, policy: npt.ArrayLike, k: int, m: int) -> float:
    """Worst-case win rate against every deterministic ``m``-output opponent.

    The minimum, over all multisets ``Y'`` of ``m`` responses, of the probability that the
    user picks one of the policy's ``k`` positions among the ``k + m`` shown (theory.md
    section 2, "m-output opponents"). For a fixed multiset with top utility ``u*`` shown at
    ``c`` opponent positions, and policy masses ``a`` below / ``e`` at ``u*`` for type
    ``t``, the win rate is ``1 - (a+e)^k + int_0^1 k e (a+se)^{k-1} s^c ds``. Exact
    enumeration of all ``C(N+m-1, m)`` multisets.

    Parameters
    ----------
    pop : Population
    policy : array_like, shape (N,)
    k, m : int
        Draws of the policy (``>= 1``) and size of the opponent's list (``>= 1``).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If the enumeration would exceed ``ROBUST_M_MAX_WORK`` (``n_multisets * T * m``);
        the message names ``m``. Use :func:`robust_win_rate` for ``m = 1``.
    """
    pop, pi, k = v._iv_policy_k(pop, policy, k)
    m = v._check_int(m, "m", 1)
    _check_multiset_work(pop, m, pop.n_responses)
    worst = 1.0
    for _, win in _multiset_win_rates(pop, pi, k, m, np.arange(pop.n_responses)):
        worst = min(worst, float(win.min()))
    return float(np.clip(worst, 0.0, 1.0))


def _check_multiset_work(pop: Population, m: int, n: int) -> None:
    """Refuse an enumeration of the ``C(n+m-1, m)`` multisets past ``ROBUST_M_MAX_WORK``."""
    t = pop.n_types
    n_sets = math.comb(n + m - 1, m)
    if n_sets * t * m > ROBUST_M_MAX_WORK:
        raise ValueError(
            f"m={m} is too large for exact enumeration on N={n}, T={t}: {n_sets} multisets "
            f"(limit {ROBUST_M_MAX_WORK} on multisets*T*m); use win_rate against concrete opponents"
        )


def _multiset_win_rates(
    pop: Population, pi: FloatArray, k: int, m: int, candidates: IntArray
) -> Iterator[tuple[IntArray, FloatArray]]:
    """Win rate of ``pi^{(x)k}`` against every ``m``-multiset of ``candidates``, in batches.

    Yields ``(sets, win)`` with ``sets`` of shape (S, m) (response indices, multisets in the
    lexicographic order of ``itertools.combinations_with_replacement`` over ``candidates``)
    and ``win`` of shape (S,). For a multiset with top utility ``u*`` shown at ``c``
    opponent positions and policy masses ``a`` below / ``e`` at ``u*`` for type ``t``, the
    type's win rate is ``1 - (a+e)^k + int_0^1 k e (a+se)^{k-1} s^c ds`` (per-position
    ties, theory.md section 1), integrated exactly by Gauss-Legendre quadrature. The batch
    boundaries depend only on ``(T, m)``, so two callers get bit-identical values.
    """
    t = pop.n_types
    n_sets = math.comb(candidates.size + m - 1, m)
    a, e = _masses(pop, pi)
    sets = np.fromiter(
        itertools.chain.from_iterable(
            itertools.combinations_with_replacement(candidates.tolist(), m)
        ),
        dtype=np.intp,
        count=n_sets * m,
    ).reshape(n_sets, m)
    s, wq = _gl_nodes(k - 1 + m)
    batch = max(1, 2_000_000 // max(1, t * m))
    rows = np.arange(t)[:, None]
    for b0 in range(0, n_sets, batch):
        ys = sets[b0 : b0 + batch]  # (S, m)
        uy = pop.utilities[:, ys]  # (T, S, m)
        top = uy.max(axis=2)
        c = (uy == top[:, :, None]).sum(axis=2)  # (T, S) opponent positions at the top
        ystar = np.take_along_axis(
            ys[None, :, :], uy.argmax(axis=2)[:, :, None], axis=2
        )[:, :, 0]
        at, et = a[rows, ystar], e[rows, ystar]
        tie = np.zeros_like(at)
        for sq, wqq in zip(s, wq, strict=True):
            tie += wqq * (at + sq * et) ** (k - 1) * sq**c
        win = 1.0 - (at + et) ** k + k * et * tie  # (T, S)
        yield ys, pop.weights @ win


def sample_responses(
    policy: npt.ArrayLike, k: int, rng: np.random.Generator | int | None = None
) -> npt.NDArray[np.intp]:
    """Draw ``k`` i.i.d. responses from ``policy``.

    Parameters
    ----------
    policy : array_like, shape (N,)
        A policy on the simplex.
    k : int
        Number of draws, ``k >= 1``.
    rng : numpy.random.Generator, int or None
        Randomness source (an int is a seed); no global state is used.

    Returns
    -------
    ndarray of int, shape (k,)
        Response indices in ``[0, N)``; repeats are allowed.
    """
    pi = v._check_simplex(policy, "policy")
    k = v._check_int(k, "k", 1)
    gen = v._check_rng(rng)
    return gen.choice(pi.size, size=k, replace=True, p=pi).astype(np.intp)
