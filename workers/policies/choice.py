"""One tie rule for every number: choices on a shown list, credit, and the worst opponent.

A user of the population is shown a *list* of positions: response ``i`` fills ``counts[i]``
of them (the policy's ``k`` draws plus the opponent's ``m``; a study shows each distinct
text once, but the copies still count). Type ``t`` picks a position of maximal utility and
splits ties uniformly **per position** (theory.md section 1): with
``S_t = argmax_{i : counts[i] > 0} U[t, i]``,

.. math:: P_t(i) = counts[i] / \\sum_{j \\in S_t} counts[j]   for i in S_t, else 0,

and ``P(i) = sum_t w_t P_t(i)``. This is the rule of :func:`pick_probability`,
:func:`win_rate` and the solvers, so a prediction, a simulated annotator and a certificate
built from this module agree with them exactly.

* :func:`choice_probabilities` -- ``P`` for a shown list (optionally Luce-noisy);
* :func:`expected_credit` -- the policy's expected credit ``c_A / (c_A + c_B)`` of the
  chosen text, which is the probability that the picked position is one of the policy's;
* :func:`choose` -- picks of simulated annotators, drawn from :func:`choice_probabilities`;
* :func:`find_adversary` / :func:`adversary` -- the ``m``-multiset of responses that
  minimises a policy's win rate (exact enumeration where :func:`robust_win_rate_m` can
  enumerate, otherwise a local search with a certified lower bound);
* :func:`multiset_win_rate` -- the win rate against one deterministic ``m``-output list;
* :func:`m_output_bound` -- what a policy is guaranteed against ``m``-output opponents, and
  what no policy can exceed (theory.md section 2).

References
----------
Cai & Zheng, *Asymptotic Universal Alignment*, arXiv 2601.08777 (2026); theory.md sections
1-2 (tie rule, m-output opponents).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from . import _validation as v
from .population import (
    ROBUST_M_MAX_WORK,
    Population,
    _gl_nodes,
    _masses,
    _multiset_win_rates,
    _pick,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

__all__ = [
    "Adversary",
    "MOutputBound",
    "adversary",
    "choice_probabilities",
    "choose",
    "expected_credit",
    "find_adversary",
    "m_output_bound",
    "multiset_win_rate",
]

#: Rounds of single-swap local search in :func:`find_adversary` when it cannot enumerate.
SEARCH_MAX_ROUNDS = 50


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def _check_counts(x: Any, name: str, n: int, *, allow_empty: bool = False) -> IntArray:
    """Non-negative integer counts per response, shape (n,), with at least one position."""
    try:
        arr = np.asarray(x)
    except (
        TypeError,
        ValueError,
    ) as exc:  # pragma: no cover - numpy accepts almost anything
        raise ValueError(f"{name} must be an array of counts: {exc}") from exc
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must have shape ({n},) (one count per response), got {arr.shape}"
        )
    integral = arr.dtype.kind in "iub" or (
        arr.dtype.kind == "f"
        and np.all(np.isfinite(arr))
        and np.all(arr == np.round(arr))
    )
    if not integral:
        raise ValueError(f"{name} must hold non-negative integers")
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        raise ValueError(
            f"{name} must hold non-negative integers, min entry is {arr.min()}"
        )
    if not allow_empty and arr.sum() < 1:
        raise ValueError(f"{name} must show at least one position (all counts are 0)")
    return arr


def _check_temperature(x: Any) -> float | None:
    if x is None:
        return None
    return v._check_float(x, "luce_temperature", minimum=0.0, strict=True)


def _check_candidates(x: Any, n: int) -> IntArray:
    if x is None:
        return np.arange(n, dtype=np.intp)
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError("candidates must be a non-empty 1-D array of response indices")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"candidates must be response indices in [0, {n})")
    return np.unique(arr).astype(np.intp)


# --------------------------------------------------------------------------------------
# choices and credit
# --------------------------------------------------------------------------------------


def _choice_by_type(pop: Population, counts: IntArray, tau: float | None) -> FloatArray:
    """``P_t(i)``, shape (T, N), for a validated count vector."""
    shown = counts > 0
    u = np.where(shown[None, :], pop.utilities, -np.inf)
    top = u.max(axis=1, keepdims=True)
    if tau is None:
        mass = np.where(u == top, counts[None, :].astype(np.float64), 0.0)
    else:
        with np.errstate(invalid="ignore"):
            mass = np.where(shown[None, :], counts * np.exp((u - top) / tau), 0.0)
    out: FloatArray = mass / mass.sum(axis=1, keepdims=True)
    return out


def choice_probabilities(
    pop: Population, counts: npt.ArrayLike, *, luce_temperature: float | None = None
) -> FloatArray:
    """Probability that a user of ``pop`` picks each response from a shown list.

    Response ``i`` fills ``counts[i]`` positions of the list. Without noise type ``t``
    picks a position of maximal utility, ties split uniformly per position (theory.md
    section 1): ``P_t(i) = counts[i] / sum_{j in S_t} counts[j]`` on the top level
    ``S_t`` of the shown responses, 0 elsewhere. With ``luce_temperature = tau > 0`` each
    position is a Luce alternative instead: ``P_t(i) = counts[i] exp(U_ti / tau) /
    sum_j counts[j] exp(U_tj / tau)``, which tends to the rule above as ``tau -> 0``.
    ``P = sum_t w_t P_t``.

    Parameters
    ----------
    pop : Population
        ``T`` types over ``N`` responses.
    counts : array_like of int, shape (N,)
        Positions filled by each response (``>= 0``, at least one in all).
    luce_temperature : float, optional
        ``tau > 0`` for Luce (softmax) choice on the utility scale; None for the exact rule.

    Returns
    -------
    ndarray, shape (N,)
        On the simplex; zero where ``counts`` is zero. Cost ``O(T N)``.

    Examples
    --------
    >>> pop = Population([[1.0, 1.0, 0.0]])          # one type, responses 0 and 1 tied
    >>> choice_probabilities(pop, [2, 1, 1])          # 0 fills two of the three top positions
    array([0.66666667, 0.33333333, 0.        ])
    """
    pop = v._check_population(pop)
    c = _check_counts(counts, "counts", pop.n_responses)
    tau = _check_temperature(luce_temperature)
    return pop.weights @ _choice_by_type(pop, c, tau)


def expected_credit(
    pop: Population, policy_counts: npt.ArrayLike, opponent_counts: npt.ArrayLike
) -> float:
    """The policy's expected credit for one shown set (theory.md section 1).

    The list holds ``c_A[i] = policy_counts[i]`` copies of response ``i`` from the policy's
    draws and ``c_B[i] = opponent_counts[i]`` from the opponent's. Choosing text ``i``
    credits the policy ``c_A[i] / (c_A[i] + c_B[i])``, and (per-position ties) text ``i``
    is chosen with probability :func:`choice_probabilities` of ``c_A + c_B``, so

    .. math:: credit = \\sum_t w_t \\frac{\\sum_{i \\in S_t} c_A[i]}{\\sum_{i \\in S_t} (c_A[i] + c_B[i])},

    the probability that the picked position is one of the policy's. Its expectation over
    the policy's and opponent's draws is :func:`win_rate`.

    Parameters
    ----------
    pop : Population
    policy_counts, opponent_counts : array_like of int, shape (N,)
        Positions per response from each side (each side may be empty, not both).

    Returns
    -------
    float
        In ``[0, 1]``; ``k / (k + m)`` when one text fills every position.
    """
    pop = v._check_population(pop)
    n = pop.n_responses
    ca = _check_counts(policy_counts, "policy_counts", n, allow_empty=True)
    cb = _check_counts(opponent_counts, "opponent_counts", n, allow_empty=True)
    total = ca + cb
    if total.sum() < 1:
        raise ValueError(
            "policy_counts and opponent_counts must show at least one position"
        )
    p = _choice_by_type(pop, total, None)  # (T, N)
    share = np.divide(ca, total, out=np.zeros(n), where=total > 0)
    return float(np.clip(pop.weights @ (p @ share), 0.0, 1.0))


def choose(
    pop: Population,
    counts: npt.ArrayLike,
    rng: np.random.Generator | int | None = None,
    *,
    luce_temperature: float | None = None,
    size: int | None = None,
) -> int | IntArray:
    """Response(s) that simulated annotators pick from a shown list.

    Each pick is an independent person of a random type: a draw from
    :func:`choice_probabilities` (the type mixture is folded into the marginal, which
    has the same law as drawing ``t ~ w`` and then a position of type ``t``).

    Parameters
    ----------
    pop, counts, luce_temperature
        As in :func:`choice_probabilities`.
    rng : numpy.random.Generator, int or None
        Randomness source (an int is a seed); no global state is used.
    size : int, optional
        Number of independent picks; None returns one ``int``.

    Returns
    -------
    int or ndarray of int, shape (size,)
        Response indices (always one with ``counts > 0``).
    """
    p = choice_probabilities(pop, counts, luce_temperature=luce_temperature)
    gen = v._check_rng(rng)
    if size is None:
        return int(gen.choice(p.size, p=p))
    size = v._check_int(size, "size", 1)
    return gen.choice(p.size, size=size, p=p).astype(np.intp)


# --------------------------------------------------------------------------------------
# the worst m-output opponent
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adversary:
    """The worst ``m``-output opponent found for a policy.

    Attributes
    ----------
    responses : tuple of int, length m
        The multiset, sorted ascending (repeats allowed).
    win_rate : float
        The policy's exact win rate against it (:func:`multiset_win_rate`).
    lower_bound : float
        A certified lower bound on the minimum over *all* ``m``-multisets of the
        candidates; equal to ``win_rate`` when ``exact``. ``win_rate - lower_bound`` is the
        largest amount by which a better opponent could exist.
    exact : bool
        True when the minimum was found by enumeration (or ``m = 1``).
    method : str
    """

    responses: tuple[int, ...]
    win_rate: float
    lower_bound: float
    exact: bool
    method: str

    @property
    def gap(self) -> float:
        """``win_rate - lower_bound`` (0 when exact)."""
        return max(0.0, self.win_rate - self.lower_bound)


def _loss_at_top(
    a: FloatArray, e: FloatArray, k: int, c: npt.ArrayLike, m: int
) -> FloatArray:
    """Loss ``1 - win`` of a type whose opponent top sits at ``c`` positions (elementwise).

    ``L = (a+e)^k - int_0^1 k e (a + s e)^{k-1} s^c ds`` (see :func:`robust_win_rate_m`).
    """
    s, wq = _gl_nodes(k - 1 + m)
    tie = np.zeros(np.broadcast_shapes(np.shape(a), np.shape(c)))
    for sq, wqq in zip(s, wq, strict=True):
        tie += wqq * (a + sq * e) ** (k - 1) * sq ** np.asarray(c)
    return (a + e) ** k - k * e * tie


def _state(pop: Population, ys: list[int]) -> tuple[FloatArray, IntArray, IntArray]:
    """Per type: top utility, its opponent position count and a top response of ``ys``."""
    u = pop.utilities[:, ys]  # (T, len)
    top = u.max(axis=1)
    count = (u == top[:, None]).sum(axis=1)
    star = np.asarray(ys, dtype=np.intp)[u.argmax(axis=1)]
    return top, count, star


def _win_if_added(
    pop: Population,
    a: FloatArray,
    e: FloatArray,
    k: int,
    m: int,
    state: tuple[FloatArray, IntArray, IntArray] | None,
    cand: IntArray,
) -> FloatArray:
    """Win rate of the policy against ``ys + [y]`` for every ``y`` in ``cand``, shape (C,)."""
    uc = pop.utilities[:, cand]  # (T, C)
    rows = np.arange(pop.n_types)[:, None]
    if state is None:
        at, et, c = a[:, cand], e[:, cand], np.ones_like(uc, dtype=np.intp)
    else:
        top, count, star = state
        above, tied = uc > top[:, None], uc == top[:, None]
        new_star = np.where(above, cand[None, :], star[:, None])
        c = np.where(above, 1, count[:, None] + tied)
        at, et = a[rows, new_star], e[rows, new_star]
    return 1.0 - pop.weights @ _loss_at_top(at, et, k, c, m)


def _lower_bound(
    pop: Population,
    pi: FloatArray,
    a: FloatArray,
    e: FloatArray,
    k: int,
    m: int,
    cand: IntArray,
) -> float:
    """A lower bound on the win rate against every ``m``-multiset of ``cand``.

    Two upper bounds on the loss ``L(Y)``: (i) the union bound ``L(Y) <= sum_j g(y_j) <=
    m max_{cand} g`` (an opponent position is picked in the full list no more often than
    next to the policy's ``k`` draws alone); (ii) per type, the loss grows with the number
    ``c <= m`` of opponent positions at the top, so ``L_t(Y) <= max_y L_t(y, c = m)``.
    """
    union = m * float(_pick(pop, pi, k)[cand].max())
    per_type = float(
        pop.weights @ _loss_at_top(a[:, cand], e[:, cand], k, m, m).max(axis=1)
    )
    return max(0.0, 1.0 - min(union, per_type))


def _local_search(
    pop: Population, pi: FloatArray, k: int, m: int, cand: IntArray
) -> tuple[list[int], float]:
    """Greedy construction then best single-element swaps until no swap helps."""
    a, e = _masses(pop, pi)
    ys: list[int] = []
    for _ in range(m):
        win = _win_if_added(pop, a, e, k, m, _state(pop, ys) if ys else None, cand)
        ys.append(int(cand[int(np.argmin(win))]))
    best = multiset_win_rate(pop, pi, k, ys)
    for _ in range(SEARCH_MAX_ROUNDS):
        improved = False
        for j in range(m):
            rest = ys[:j] + ys[j + 1 :]
            win = _win_if_added(
                pop, a, e, k, m, _state(pop, rest) if rest else None, cand
            )
            i = int(np.argmin(win))
            if win[i] < best - 1e-15:
                ys = sorted([*rest, int(cand[i])])
                best = multiset_win_rate(pop, pi, k, ys)
                improved = True
        if not improved:
            break
    return sorted(ys), best


def find_adversary(
    pop: Population,
    policy: npt.ArrayLike,
    k: int,
    m: int = 1,
    *,
    candidates: npt.ArrayLike | None = None,
    max_work: int = ROBUST_M_MAX_WORK,
) -> Adversary:
    """The ``m``-multiset of responses that minimises the policy's win rate.

    The opponent shows ``m`` fixed responses (repeats allowed) next to ``k`` i.i.d. draws
    from ``policy``; the user picks as in theory.md section 1. Against a randomised
    opponent the win rate is an average over multisets, so the minimum over multisets is
    the worst case over every ``m``-output opponent.

    * ``m = 1``: the response of largest pick probability ``g_pi`` (lowest index among
      equals); ``win_rate`` is then exactly :func:`robust_win_rate` when ``candidates`` is
      every response.
    * ``m > 1`` and ``C(|candidates|+m-1, m) * T * m <= ROBUST_M_MAX_WORK``: exact
      enumeration with the kernel of :func:`robust_win_rate_m` (the lexicographically
      first minimiser); ``win_rate`` equals :func:`robust_win_rate_m` bit for bit when
      ``candidates`` is every response.
    * otherwise: greedy construction (each added response minimises the win rate of the
      partial list) followed by best single-element swaps until none helps (at most
      ``SEARCH_MAX_ROUNDS`` rounds, each ``O(m T |candidates| (k + m))``). Its result is
      an upper bound on the true minimum; ``lower_bound`` is certified (see
      ``_lower_bound``: the union bound ``1 - m max g`` and the per-type bound), and
      ``gap`` states how far from optimal the search can be.

    Parameters
    ----------
    pop : Population
    policy : array_like, shape (N,)
    k, m : int
        Draws of the policy and size of the opponent's list, both ``>= 1``.
    candidates : array_like of int, optional
        Responses the opponent may show (default: all ``N``), e.g. held-out responses.
    max_work : int
        Largest ``n_multisets * T * m`` enumerated (default ``ROBUST_M_MAX_WORK``, the
        limit of :func:`robust_win_rate_m`); 0 forces the search.

    Returns
    -------
    Adversary
    """
    pop, pi, k = v._iv_policy_k(pop, policy, k)
    m = v._check_int(m, "m", 1)
    cand = _check_candidates(candidates, pop.n_responses)
    if m == 1:
        g = _pick(pop, pi, k)
        i = int(cand[int(np.argmax(g[cand]))])
        win = (
            float(1.0 - g.max()) if cand.size == pop.n_responses else float(1.0 - g[i])
        )
        return Adversary((i,), win, win, True, "argmax of the pick probability")
    max_work = v._check_int(max_work, "max_work", 0)
    if math.comb(cand.size + m - 1, m) * pop.n_types * m <= max_work:
        best_set, best = None, math.inf
        for sets, wins in _multiset_win_rates(pop, pi, k, m, cand):
            j = int(np.argmin(wins))
            if wins[j] < best:
                best_set, best = sets[j], float(wins[j])
        assert best_set is not None
        best = float(np.clip(best, 0.0, 1.0))
        return Adversary(
            tuple(int(x) for x in best_set), best, best, True, "enumeration"
        )
    ys, win = _local_search(pop, pi, k, m, cand)
    a, e = _masses(pop, pi)
    low = min(win, _lower_bound(pop, pi, a, e, k, m, cand))
    return Adversary(tuple(ys), win, low, False, "greedy + swap search (bounded)")


def adversary(
    pop: Population,
    policy: npt.ArrayLike,
    k: int,
    m: int = 1,
    *,
    candidates: npt.ArrayLike | None = None,
) -> tuple[int, ...]:
    """The worst ``m``-multiset of responses for ``policy``: ``find_adversary(...).responses``."""
    return find_adversary(pop, policy, k, m, candidates=candidates).responses


def multiset_win_rate(
    pop: Population, policy: npt.ArrayLike, k: int, responses: npt.ArrayLike
) -> float:
    """Exact win rate of ``k`` draws from ``policy`` against a fixed list of responses.

    ``responses`` (length ``m >= 1``, repeats allowed) is the opponent's list. Equal to
    :func:`win_rate` with ``m`` draws from an opponent that puts all its mass on one
    response when ``responses`` repeats one response, and to the average of
    :func:`expected_credit` over the policy's draws in general.
    """
    pop, pi, k = v._iv_policy_k(pop, policy, k)
    ys = np.asarray(responses)
    if ys.ndim != 1 or ys.size == 0 or ys.dtype.kind not in "iu":
        raise ValueError("responses must be a non-empty 1-D array of response indices")
    if ys.min() < 0 or ys.max() >= pop.n_responses:
        raise ValueError(
            f"responses must be response indices in [0, {pop.n_responses})"
        )
    m = int(ys.size)
    a, e = _masses(pop, pi)
    top, count, star = _state(pop, [int(y) for y in ys])
    rows = np.arange(pop.n_types)
    loss = _loss_at_top(a[rows, star], e[rows, star], k, count, m)
    return float(np.clip(1.0 - pop.weights @ loss, 0.0, 1.0))


# --------------------------------------------------------------------------------------
# the m-output bound
# --------------------------------------------------------------------------------------


class MOutputBound(NamedTuple):
    """Bounds on a policy's robust win rate against ``m``-output opponents.

    guaranteed : ``max(0, 1 - m (1 - f1))``: the policy's win rate against every
        ``m``-output opponent is at least this, where ``f1`` is its single-output robust
        win rate (``k/(k+1)`` for a (k+1)-player equilibrium, giving ``1 - m/(k+1)``).
    ceiling : ``k/(k+m)``: no policy's robust ``m``-output win rate exceeds it.
    """

    guaranteed: float
    ceiling: float


def m_output_bound(
    k: int, m: int, *, single_output_rate: float | None = None
) -> MOutputBound:
    """What a policy is guaranteed against ``m``-output opponents (theory.md section 2).

    **Guarantee (union bound).** Let ``Y = (y_1..y_m)`` be the opponent's list. The user
    picks an opponent position iff some position ``j`` is picked; position ``j`` is picked
    in the full list of ``k + m`` no more often than in the list of the policy's ``k`` draws
    and ``y_j`` alone (more competitors only lower its chance), which is ``g_pi(y_j)``.
    So ``1 - W(Y) <= sum_j g_pi(y_j) <= m max_i g_pi(i) = m (1 - f_pi(k))``, and

    .. math:: f^{(m)}_\\pi(k) >= 1 - m (1 - f_\\pi(k)),   = 1 - m/(k+1) at an equilibrium.

    It is tight for the class of equilibria: with types ``t_1..t_m`` of weight ``1/(k+1)``
    each preferring only ``y_j`` to ``x`` and the rest preferring ``x`` to everything,
    ``delta_x`` is a (k+1)-player equilibrium and ``W(y_1..y_m) = 1 - m/(k+1)``.

    **Ceiling.** An opponent who draws its ``m`` responses from the policy itself wins
    ``m/(k+m)`` by exchangeability (per-position ties), and that randomised opponent is an
    average of deterministic lists, so ``min_Y W(Y) <= k/(k+m)`` for every policy.

    Parameters
    ----------
    k, m : int
        Policy draws and opponent outputs, both ``>= 1``.
    single_output_rate : float in [0, 1], optional
        The policy's robust win rate ``f_pi(k)`` against one output; default ``k/(k+1)``
        (a certified equilibrium).

    Returns
    -------
    MOutputBound
        ``guaranteed <= ceiling``; both equal ``k/(k+1)`` at ``m = 1`` for an equilibrium.

    Examples
    --------
    >>> m_output_bound(2, 2)
    MOutputBound(guaranteed=0.33333333333333326, ceiling=0.5)
    """
    k = v._check_int(k, "k", 1)
    m = v._check_int(m, "m", 1)
    if single_output_rate is None:
        f1 = k / (k + 1)
    else:
        f1 = v._check_float(
            single_output_rate, "single_output_rate", minimum=0.0, strict=False
        )
        if f1 > 1.0:
            raise ValueError(f"single_output_rate must be <= 1, got {f1}")
    ceiling = k / (k + m)
    return MOutputBound(min(ceiling, max(0.0, 1.0 - m * (1.0 - f1))), ceiling)
