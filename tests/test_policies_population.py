"""Exact quantities of workers.policies.population against theory.md sections 1-2 and 7.

Pure NumPy: no database. Brute force enumerates every list of responses shown to the user
and applies the tie rule of theory.md section 1 (ties split uniformly per position).
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.policies import (
    Population,
    exploitability,
    pick_probability,
    robust_win_rate,
    robust_win_rate_m,
    sample_responses,
    win_rate,
)

CONDORCET = [[3, 2, 1], [1, 3, 2], [2, 1, 3]]  # rankings a>b>c, b>c>a, c>a>b


def brute_win_rate(u, w, pi, k, sigma, m, *, half_tie=False):
    """P(user picks one of the policy's k positions) by enumerating all (k+m)-tuples."""
    t_count, n = u.shape
    total = 0.0
    for xs in itertools.product(range(n), repeat=k):
        px = np.prod(pi[list(xs)])
        if px == 0:
            continue
        for ys in itertools.product(range(n), repeat=m):
            py = np.prod(sigma[list(ys)])
            if py == 0:
                continue
            for t in range(t_count):
                ux, uy = u[t, list(xs)], u[t, list(ys)]
                top = max(ux.max(), uy.max())
                c_a, c_b = int((ux == top).sum()), int((uy == top).sum())
                if half_tie:  # the WRONG rule: a tie at the top counts 1/2
                    credit = 1.0 if c_b == 0 else (0.0 if c_a == 0 else 0.5)
                else:
                    credit = c_a / (c_a + c_b)
                total += w[t] * px * py * credit
    return total


def brute_pick(u, w, pi, k):
    """g_pi(i) = P(response i is picked next to k draws from pi), by enumeration."""
    n = u.shape[1]
    return np.array(
        [1.0 - brute_win_rate(u, w, pi, k, np.eye(n)[i], 1) for i in range(n)]
    )


def random_instance(seed, *, ties, n_max=4, t_max=3):
    rng = np.random.default_rng(seed)
    t, n = int(rng.integers(1, t_max + 1)), int(rng.integers(1, n_max + 1))
    u = (
        rng.integers(0, 3, size=(t, n)).astype(float)
        if ties
        else rng.standard_normal((t, n))
    )
    w = rng.dirichlet(np.ones(t))
    pi = rng.dirichlet(np.ones(n))
    if n > 1 and seed % 2:
        pi[rng.integers(n)] = 0.0
        pi /= pi.sum()
    sigma = rng.dirichlet(np.ones(n))
    return u, w, pi, sigma


# --------------------------------------------------------------------------------------
# theory.md section 7: Condorcet cycle
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "expected"), [(1, 1 / 2), (2, 2 / 3), (3, 3 / 4), (4, 4 / 5)]
)
def test_uniform_policy_on_condorcet_cycle_wins_k_over_k_plus_one(k, expected):
    pop = Population(CONDORCET)
    uniform = np.full(3, 1 / 3)
    assert robust_win_rate(pop, uniform, k) == pytest.approx(expected, abs=1e-15)
    assert exploitability(pop, uniform, k) == pytest.approx(0.0, abs=1e-15)


def test_half_tie_rule_would_give_35_54_on_condorcet_but_the_position_rule_gives_two_thirds():
    u = np.array(CONDORCET, dtype=float)
    w, uniform = np.full(3, 1 / 3), np.full(3, 1 / 3)
    wrong = [
        brute_win_rate(u, w, uniform, 2, np.eye(3)[y], 1, half_tie=True)
        for y in range(3)
    ]
    np.testing.assert_allclose(wrong, 35 / 54, atol=1e-15)
    assert win_rate(Population(u), uniform, 2, np.eye(3)[0]) == pytest.approx(
        2 / 3, abs=1e-15
    )


def test_single_response_pool_gives_k_over_k_plus_one_not_one_half():
    pop = Population([[0.0], [5.0]])
    for k in (1, 2, 7):
        assert robust_win_rate(pop, [1.0], k) == pytest.approx(k / (k + 1), abs=1e-15)


# --------------------------------------------------------------------------------------
# pick probability and win rates against brute-force enumeration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_pick_probability_matches_enumeration_of_all_lists(seed, ties, k):
    u, w, pi, _ = random_instance(seed, ties=ties)
    got = pick_probability(Population(u, w), pi, k)
    np.testing.assert_allclose(got, brute_pick(u, w, pi, k), atol=1e-13)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("k", "m"), [(1, 2), (2, 2), (3, 1), (2, 3), (1, 4)])
def test_win_rate_against_m_output_opponent_matches_enumeration(seed, ties, k, m):
    u, w, pi, sigma = random_instance(seed, ties=ties)
    got = win_rate(Population(u, w), pi, k, sigma, m)
    assert got == pytest.approx(brute_win_rate(u, w, pi, k, sigma, m), abs=1e-13)


def test_win_rate_against_one_draw_is_one_minus_opponent_weighted_pick_probability():
    u, w, pi, sigma = random_instance(11, ties=True, n_max=6, t_max=5)
    pop = Population(u, w)
    assert win_rate(pop, pi, 3, sigma) == pytest.approx(
        1 - sigma @ pick_probability(pop, pi, 3), abs=1e-15
    )


def test_identical_policies_split_the_win_rate_k_to_m():
    rng = np.random.default_rng(5)
    pop = Population(
        rng.integers(0, 4, size=(6, 7)).astype(float), rng.dirichlet(np.ones(6))
    )
    pi = rng.dirichlet(np.ones(7))
    for k, m in [(1, 1), (2, 3), (4, 1), (5, 5)]:
        assert win_rate(pop, pi, k, pi, m) == pytest.approx(k / (k + m), abs=1e-13)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("k", "m"), [(1, 2), (2, 2), (3, 3)])
def test_robust_win_rate_m_is_the_minimum_over_enumerated_opponent_lists(
    seed, ties, k, m
):
    u, w, pi, _ = random_instance(seed, ties=ties)
    n = u.shape[1]
    expected = min(
        _brute_against_list(u, w, pi, k, ys)
        for ys in itertools.combinations_with_replacement(range(n), m)
    )
    assert robust_win_rate_m(Population(u, w), pi, k, m) == pytest.approx(
        expected, abs=1e-13
    )


def _brute_against_list(u, w, pi, k, ys):
    total = 0.0
    for xs in itertools.product(range(u.shape[1]), repeat=k):
        px = np.prod(pi[list(xs)])
        for t in range(u.shape[0]):
            ux, uy = u[t, list(xs)], u[t, list(ys)]
            top = max(ux.max(), uy.max())
            c_a, c_b = (ux == top).sum(), (uy == top).sum()
            total += w[t] * px * c_a / (c_a + c_b)
    return total


def test_robust_win_rate_m_with_one_opponent_output_is_the_robust_win_rate():
    u, w, pi, _ = random_instance(3, ties=True, n_max=8, t_max=5)
    pop = Population(u, w)
    assert robust_win_rate_m(pop, pi, 4, 1) == pytest.approx(
        robust_win_rate(pop, pi, 4), abs=1e-14
    )


def test_robust_win_rate_m_refuses_an_enumeration_that_is_too_large():
    pop = Population(np.random.default_rng(0).standard_normal((50, 200)))
    with pytest.raises(ValueError, match="^m=6 is too large"):
        robust_win_rate_m(pop, np.full(200, 1 / 200), 2, 6)


# --------------------------------------------------------------------------------------
# identity and numerical accuracy
# --------------------------------------------------------------------------------------


@st.composite
def populations_and_policies(draw):
    t = draw(st.integers(1, 6))
    n = draw(st.integers(1, 12))
    levels = draw(st.sampled_from([2, 3, 1000]))  # few levels = many ties
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    u = rng.integers(0, levels, size=(t, n)).astype(float)
    w = rng.dirichlet(np.ones(t))
    pi = rng.dirichlet(np.full(n, draw(st.sampled_from([0.1, 1.0]))))
    pi[rng.random(n) < 0.3] = 0.0
    if pi.sum() == 0:
        pi[0] = 1.0
    return Population(u, w), pi / pi.sum()


@settings(max_examples=60, deadline=None)
@given(data=populations_and_policies(), k=st.integers(1, 12))
def test_sum_of_policy_times_pick_probability_is_one_over_k_plus_one(data, k):
    pop, pi = data
    g = pick_probability(pop, pi, k)
    assert pi @ g == pytest.approx(1 / (k + 1), abs=1e-13)
    assert np.all(g >= 0)
    assert np.all(
        g <= 1 + 1e-13
    )  # prefix sums may reach 1 + a few ulp; (1 + d)^k ~ 1 + k d


def _exact_pick(u, w, pi, k, i):
    """g_pi(i) in exact rational arithmetic from the float inputs."""
    total = Fraction(0)
    for t in range(u.shape[0]):
        a = sum(
            (Fraction(float(pi[j])) for j in range(u.shape[1]) if u[t, j] < u[t, i]),
            Fraction(0),
        )
        e = sum(
            (Fraction(float(pi[j])) for j in range(u.shape[1]) if u[t, j] == u[t, i]),
            Fraction(0),
        )
        g = a**k if e == 0 else ((a + e) ** (k + 1) - a ** (k + 1)) / ((k + 1) * e)
        total += Fraction(float(w[t])) * g
    return total


@pytest.mark.parametrize("k", [2, 8, 30])
def test_pick_probability_has_no_cancellation_for_tiny_masses(k):
    u = np.array([[0.0, 1.0, 2.0, 3.0, 1.0], [3.0, 2.0, 1.0, 0.0, 0.0]])
    w = np.array([0.5, 0.5])
    pi = np.array([0.6, 1e-13, 0.4 - 2e-13, 1e-13, 0.0])
    pi = pi / pi.sum()
    got = pick_probability(Population(u, w), pi, k)
    for i in range(5):
        exact = float(_exact_pick(u, w, pi, k, i))
        assert got[i] == pytest.approx(exact, rel=1e-12, abs=1e-300)


def test_exploitability_is_max_pick_probability_minus_one_over_k_plus_one():
    u, w, pi, _ = random_instance(7, ties=False, n_max=9, t_max=6)
    pop = Population(u, w)
    g = pick_probability(pop, pi, 3)
    assert exploitability(pop, pi, 3) == pytest.approx(g.max() - 1 / 4, abs=1e-15)
    assert robust_win_rate(pop, pi, 3) == pytest.approx(1 - g.max(), abs=1e-15)


# --------------------------------------------------------------------------------------
# Population and sampling
# --------------------------------------------------------------------------------------


def test_population_defaults_to_uniform_weights_and_is_read_only():
    pop = Population([[1, 2], [2, 1], [0, 0]])
    np.testing.assert_allclose(pop.weights, 1 / 3)
    assert (pop.n_types, pop.n_responses) == (3, 2)
    with pytest.raises(ValueError, match="read-only"):
        pop.utilities[0, 0] = 5.0


def test_population_does_not_alias_the_callers_array():
    u = np.array([[1.0, 2.0]])
    pop = Population(u)
    u[0, 0] = 9.0
    assert pop.utilities[0, 0] == 1.0


def test_sample_responses_is_reproducible_and_follows_the_policy():
    pi = np.array([0.5, 0.0, 0.3, 0.2])
    a = sample_responses(pi, 20_000, 42)
    b = sample_responses(pi, 20_000, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20_000,)
    assert a.dtype == np.intp
    freq = np.bincount(a, minlength=4) / a.size
    assert freq[1] == 0.0
    np.testing.assert_allclose(freq, pi, atol=5 * np.sqrt(0.25 / a.size))


# --------------------------------------------------------------------------------------
# validation: every bad input raises ValueError naming the argument
# --------------------------------------------------------------------------------------

GOOD_U = [[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]]


@pytest.mark.parametrize(
    ("utilities", "weights", "name"),
    [
        ([1.0, 2.0], None, "utilities"),
        ([[1.0, np.nan]], None, "utilities"),
        ([[1.0, np.inf]], None, "utilities"),
        (np.zeros((0, 3)), None, "utilities"),
        ([["a", "b"]], None, "utilities"),
        (GOOD_U, [0.5, 0.6], "weights"),
        (GOOD_U, [1.5, -0.5], "weights"),
        (GOOD_U, [1.0], "weights"),
        (GOOD_U, [[0.5, 0.5]], "weights"),
        (GOOD_U, [np.nan, 1.0], "weights"),
        (GOOD_U, [3, 7], "weights"),  # counts are rejected, not normalised
    ],
)
def test_population_rejects_bad_input_naming_the_argument(utilities, weights, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        Population(utilities, weights)


BAD_POLICIES = [
    ([0.5, 0.5], "policy"),  # wrong length
    ([0.5, 0.6, -0.1], "policy"),  # negative
    ([0.2, 0.2, 0.2], "policy"),  # not summing to 1
    ([np.nan, 0.5, 0.5], "policy"),
    ([[1 / 3, 1 / 3, 1 / 3]], "policy"),  # 2-D
]


@pytest.mark.parametrize(("policy", "name"), BAD_POLICIES)
@pytest.mark.parametrize("func", [pick_probability, robust_win_rate, exploitability])
def test_policy_functions_reject_policies_off_the_simplex(func, policy, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        func(Population(GOOD_U), policy, 2)


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", True, None])
@pytest.mark.parametrize("func", [pick_probability, robust_win_rate, exploitability])
def test_policy_functions_reject_k_below_one_or_not_an_integer(func, k):
    with pytest.raises(ValueError, match="^k "):
        func(Population(GOOD_U), np.full(3, 1 / 3), k)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"pop": np.ones((2, 3))}, "pop"),
        ({"policy": [1.0, 0.0]}, "policy"),
        ({"k": 0}, "k"),
        ({"opponent": [0.5, 0.5, 0.5]}, "opponent"),
        ({"opponent": [1.0, 0.0]}, "opponent"),
        ({"m": 0}, "m"),
        ({"m": 2.0}, "m"),
    ],
)
def test_win_rate_rejects_bad_input_naming_the_argument(kwargs, name):
    args = {
        "pop": Population(GOOD_U),
        "policy": np.full(3, 1 / 3),
        "k": 2,
        "opponent": [1.0, 0.0, 0.0],
        "m": 1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{name} "):
        win_rate(**args)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (([0.5, 0.5], 0, None), "k"),
        (([0.5, 0.7], 3, None), "policy"),
        (([0.5, 0.5], 3, "seed"), "rng"),
        (([0.5, 0.5], 3, -1), "rng"),
    ],
)
def test_sample_responses_rejects_bad_input_naming_the_argument(args, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        sample_responses(*args)


def test_robust_win_rate_m_rejects_m_below_one():
    with pytest.raises(ValueError, match="^m "):
        robust_win_rate_m(Population(GOOD_U), np.full(3, 1 / 3), 2, 0)


def test_policy_within_rounding_of_the_simplex_is_accepted_and_renormalised():
    pop = Population(GOOD_U)
    pi = np.array([0.5, 0.5 + 1e-12, -1e-12])
    assert pick_probability(pop, pi, 2) == pytest.approx(
        pick_probability(pop, [0.5, 0.5, 0.0], 2), abs=1e-11
    )
