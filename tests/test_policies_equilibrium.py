"""Equilibrium solvers of workers.policies (theory.md sections 3, 4 and 7).

Pure NumPy/SciPy: no database. Every certificate a solver reports is recomputed here
independently from pick_probability and the fixed-point formula.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.policies import (
    Population,
    exploitability,
    pick_probability,
    robust_win_rate,
    solve_multiplayer,
    solve_nlhf,
)

CONDORCET = [[3, 2, 1], [1, 3, 2], [2, 1, 3]]


def majority(alpha):
    """Two responses a, b; a fraction alpha of users prefers a (theory.md section 7)."""
    return Population([[1.0, 0.0], [0.0, 1.0]], [alpha, 1 - alpha])


def fixed_point_residual(pop, pi, k, beta, mu):
    """||pi - softmax(log mu + g_pi / beta)||_1, computed from scratch."""
    with np.errstate(divide="ignore"):
        logits = np.log(mu) + pick_probability(pop, pi, k) / beta
    y = np.exp(logits - logits.max())
    return np.abs(pi - y / y.sum()).sum()


def assert_certificate_is_honest(pop, sol, k, mu=None):
    assert sol.exploitability == exploitability(pop, sol.policy, k)
    assert sol.exploitability == pytest.approx(
        max(0.0, pick_probability(pop, sol.policy, k).max() - 1 / (k + 1)), abs=1e-15
    )
    if sol.beta == 0:
        assert sol.residual == sol.exploitability
    else:
        mu = np.full(pop.n_responses, 1 / pop.n_responses) if mu is None else mu
        # logits g / beta of size up to 1 / beta carry rounding of about eps / beta
        assert sol.residual == pytest.approx(
            fixed_point_residual(pop, sol.policy, k, sol.beta, mu),
            abs=1e-15 * (1 + 1 / sol.beta) * pop.n_responses,
        )
    assert sol.converged == (sol.residual <= sol.tol)
    np.testing.assert_array_equal(sol.support, np.flatnonzero(sol.policy > 0))
    assert sol.policy.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.all(sol.policy >= 0)


# --------------------------------------------------------------------------------------
# theory.md section 7: worked examples
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "rate"), [(1, 1 / 2), (2, 2 / 3), (3, 3 / 4), (4, 4 / 5)]
)
def test_every_equilibrium_on_the_condorcet_cycle_is_uniform(k, rate):
    pop = Population(CONDORCET)
    sol = solve_multiplayer(pop, k)
    assert sol.converged
    np.testing.assert_allclose(sol.policy, 1 / 3, atol=1e-9)
    assert robust_win_rate(pop, sol.policy, k) == pytest.approx(rate, abs=1e-9)
    assert_certificate_is_honest(pop, sol, k)


@pytest.mark.parametrize("alpha", [0.55, 0.6, 0.75, 0.9])
def test_nlhf_on_a_two_response_majority_is_delta_a_and_wins_alpha_at_every_k_above_one(
    alpha,
):
    pop = majority(alpha)
    sol = solve_nlhf(pop)
    np.testing.assert_allclose(sol.policy, [1.0, 0.0], atol=1e-12)
    assert robust_win_rate(pop, sol.policy, 1) == pytest.approx(0.5, abs=1e-12)
    for k in (2, 3, 10, 50):
        # k copies of a: the opponent's b wins 1 - alpha; its copy of a ties k+1 ways.
        # theory.md says "alpha"; exactly it is min(alpha, k/(k+1)) (alpha whenever alpha <= k/(k+1))
        assert robust_win_rate(pop, sol.policy, k) == pytest.approx(
            min(alpha, k / (k + 1)), abs=1e-12
        )


@pytest.mark.parametrize("alpha", [0.52, 0.55, 0.6, 0.65])
def test_k2_equilibrium_of_a_two_response_majority_puts_three_alpha_minus_one_on_a(
    alpha,
):
    pop = majority(alpha)
    sol = solve_multiplayer(pop, 2)
    assert sol.converged
    assert sol.policy[0] == pytest.approx(3 * alpha - 1, abs=1e-9)
    assert robust_win_rate(pop, sol.policy, 2) == pytest.approx(2 / 3, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.55, 0.6, 0.7, 0.75, 0.8, 0.9, 0.97])
@pytest.mark.parametrize("k", [2, 3, 4, 6, 9])
def test_two_response_majority_equilibrium_solves_the_p_equation_and_is_delta_a_iff_minority_small(
    alpha, k
):
    sol = solve_multiplayer(majority(alpha), k)
    assert sol.converged
    p = sol.policy[0]
    if abs((1 - alpha) - 1 / (k + 1)) < 1e-12:
        # on the boundary delta_a is a degenerate equilibrium: the exploitability is
        # quadratic in 1 - p, so a certificate <= 1e-9 pins p only to about 1e-5
        assert p == pytest.approx(1.0, abs=1e-5)
    elif 1 - alpha < 1 / (k + 1):
        assert p == pytest.approx(1.0, abs=1e-12)
    else:
        assert p < 1 - 1e-6
        lhs = alpha * (1 - (1 - p) ** (k + 1)) / p + (1 - alpha) * p**k
        assert lhs == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------------------
# property-based: random populations, with and without ties
# --------------------------------------------------------------------------------------


@st.composite
def populations(draw, max_n=14):
    t = draw(st.integers(1, 8))
    n = draw(st.integers(1, max_n))
    levels = draw(st.sampled_from([2, 3, 5, None]))  # None: continuous, no ties
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    u = (
        rng.standard_normal((t, n))
        if levels is None
        else rng.integers(0, levels, size=(t, n)).astype(float)
    )
    if n >= 3 and draw(st.booleans()):
        u[:, 2] = u[:, 0]  # a duplicated response
    w = rng.dirichlet(np.ones(t)) if draw(st.booleans()) else None
    return Population(u, w)


@settings(max_examples=60, deadline=None)
@given(pop=populations(), k=st.sampled_from([1, 2, 3, 5, 8]))
def test_solver_policy_wins_at_least_k_over_k_plus_one_and_reports_an_honest_certificate(
    pop, k
):
    sol = solve_multiplayer(pop, k)
    assert sol.converged
    assert robust_win_rate(pop, sol.policy, k) >= k / (k + 1) - 1e-6
    assert exploitability(pop, sol.policy, k) <= 1e-9
    assert_certificate_is_honest(pop, sol, k)


@settings(max_examples=30, deadline=None)
@given(
    pop=populations(max_n=10),
    k=st.sampled_from([1, 2, 4]),
    beta=st.sampled_from([3.0, 0.3, 0.03, 0.003]),
)
def test_regularised_solver_reaches_the_fixed_point_and_reports_an_honest_residual(
    pop, k, beta
):
    mu = np.random.default_rng(pop.n_responses).dirichlet(np.ones(pop.n_responses))
    sol = solve_multiplayer(pop, k, beta=beta, reference=mu)
    assert sol.converged
    assert sol.residual <= 1e-9
    assert_certificate_is_honest(pop, sol, k, mu)


# --------------------------------------------------------------------------------------
# k = 1: agreement with the LP of the maximal lottery
# --------------------------------------------------------------------------------------


def majority_matrix(pop):
    """P[i, j] = sum_t w_t (1[U_ti > U_tj] + 1/2 1[U_ti = U_tj]), built by brute force."""
    u, w = pop.utilities, pop.weights
    return np.einsum(
        "t,tij->ij",
        w,
        (u[:, :, None] > u[:, None, :]) + 0.5 * (u[:, :, None] == u[:, None, :]),
    )


def maximal_lottery_lp(pop):
    n = pop.n_responses
    a_ub = np.hstack([majority_matrix(pop), -np.ones((n, 1))])
    res = scipy.optimize.linprog(
        np.r_[np.zeros(n), 1.0],
        A_ub=a_ub,
        b_ub=np.zeros(n),
        A_eq=np.r_[np.ones(n), 0.0][None],
        b_eq=[1.0],
        bounds=[(0, None)] * n + [(None, None)],
        method="highs",
    )
    assert res.status == 0
    return res.x[:n], res.x[n]


@pytest.mark.parametrize("seed", range(8))
def test_nlhf_matches_the_lp_maximal_lottery_for_odd_strict_electorates(seed):
    # odd number of equal-weight types with strict rankings: the maximal lottery is unique
    rng = np.random.default_rng(seed)
    pop = Population(
        rng.standard_normal(
            (2 * int(rng.integers(1, 15)) + 1, int(rng.integers(2, 40)))
        )
    )
    lp_policy, lp_value = maximal_lottery_lp(pop)
    sol = solve_nlhf(pop)
    assert lp_value == pytest.approx(0.5, abs=1e-9)
    assert sol.converged
    np.testing.assert_allclose(sol.policy, lp_policy, atol=1e-7)
    np.testing.assert_allclose(
        majority_matrix(pop) @ sol.policy,
        pick_probability(pop, sol.policy, 1),
        atol=1e-14,
    )


@settings(max_examples=40, deadline=None)
@given(pop=populations())
def test_nlhf_and_the_lp_both_guarantee_one_half_even_when_the_maximal_lottery_is_not_unique(
    pop,
):
    lp_policy, lp_value = maximal_lottery_lp(pop)
    sol = solve_nlhf(pop)
    assert lp_value == pytest.approx(0.5, abs=1e-9)
    assert robust_win_rate(pop, sol.policy, 1) == pytest.approx(0.5, abs=1e-9)
    assert robust_win_rate(
        pop, np.clip(lp_policy, 0, None) / np.clip(lp_policy, 0, None).sum(), 1
    ) == pytest.approx(0.5, abs=1e-7)


def test_solve_nlhf_is_solve_multiplayer_at_k1_with_and_without_regularisation():
    pop = Population(np.random.default_rng(4).standard_normal((9, 12)))
    np.testing.assert_allclose(
        solve_nlhf(pop).policy, solve_multiplayer(pop, 1).policy, atol=1e-12
    )
    a, b = solve_nlhf(pop, beta=0.05), solve_multiplayer(pop, 1, beta=0.05)
    np.testing.assert_allclose(a.policy, b.policy, atol=1e-12)
    assert a.k == 1
    assert a.converged


# --------------------------------------------------------------------------------------
# larger instances, duplicates, budget
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4, 8])
def test_solver_certifies_a_medium_gaussian_population(k):
    pop = Population(np.random.default_rng(k).standard_normal((60, 150)))
    sol = solve_multiplayer(pop, k)
    assert sol.converged
    assert sol.exploitability <= 1e-9
    assert_certificate_is_honest(pop, sol, k)
    assert robust_win_rate(pop, sol.policy, k) >= k / (k + 1) - 1e-9


def test_duplicated_responses_do_not_stop_the_solver():
    rng = np.random.default_rng(8)
    base = rng.standard_normal((7, 5))
    pop = Population(
        np.hstack([base, base, base[:, :2]])
    )  # every response appears 2-3 times
    for k in (1, 3):
        sol = solve_multiplayer(pop, k)
        assert sol.converged
        assert_certificate_is_honest(pop, sol, k)


def test_a_solver_out_of_iterations_says_so_and_still_reports_the_true_certificate():
    pop = Population(np.random.default_rng(2).standard_normal((80, 200)))
    sol = solve_multiplayer(pop, 8, max_iter=1)
    assert not sol.converged
    assert sol.n_iter == 1
    assert sol.residual > sol.tol
    assert_certificate_is_honest(pop, sol, 8)


def test_solution_is_immutable():
    sol = solve_multiplayer(Population(CONDORCET), 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.converged = False  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        sol.policy[0] = 1.0


# --------------------------------------------------------------------------------------
# beta > 0
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [10.0, 1.0, 0.1, 0.01, 1e-3, 1e-4])
def test_regularised_equilibrium_satisfies_the_fixed_point_and_the_exploitability_bound(
    beta,
):
    rng = np.random.default_rng(1)
    pop = Population(rng.standard_normal((30, 40)))
    mu = rng.dirichlet(np.ones(40))
    sol = solve_multiplayer(pop, 4, beta=beta, reference=mu)
    assert sol.converged
    assert sol.residual <= 1e-9
    assert_certificate_is_honest(pop, sol, 4, mu)
    # g_i = beta log(pi_i / mu_i) + c  =>  e_k(pi) <= beta * log(1 / min mu)
    assert sol.exploitability <= beta * np.log(1 / mu.min()) + 1e-9


def test_regularised_equilibrium_tends_to_the_reference_as_beta_grows():
    rng = np.random.default_rng(3)
    pop = Population(rng.standard_normal((10, 15)))
    mu = rng.dirichlet(np.ones(15))
    gaps = [
        np.abs(solve_multiplayer(pop, 3, beta=b, reference=mu).policy - mu).sum()
        for b in (1.0, 10.0, 100.0, 1e4)
    ]
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 1e-3


def test_regularised_equilibrium_tends_to_the_unregularised_one_as_beta_shrinks():
    rng = np.random.default_rng(6)
    pop = Population(rng.standard_normal((25, 30)))
    exact = solve_multiplayer(pop, 3)
    prev = np.inf
    for beta in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        sol = solve_multiplayer(pop, 3, beta=beta)
        assert sol.converged
        assert sol.exploitability < prev
        prev = sol.exploitability
    assert robust_win_rate(pop, sol.policy, 3) == pytest.approx(
        robust_win_rate(pop, exact.policy, 3), abs=1e-3
    )
    np.testing.assert_allclose(sol.policy, exact.policy, atol=1e-2)


def test_responses_outside_the_references_support_get_no_mass():
    pop = Population(np.random.default_rng(0).standard_normal((6, 5)))
    mu = np.array([0.5, 0.0, 0.25, 0.25, 0.0])
    sol = solve_multiplayer(pop, 2, beta=0.05, reference=mu)
    assert sol.converged
    assert sol.policy[1] == 0.0
    assert sol.policy[4] == 0.0
    assert_certificate_is_honest(pop, sol, 2, mu)


def test_regularised_solver_handles_a_nearly_deterministic_condorcet_cycle():
    pop = Population(CONDORCET)
    sol = solve_multiplayer(pop, 2, beta=1e-4, reference=[0.6, 0.3, 0.1])
    assert sol.converged
    np.testing.assert_allclose(sol.policy, 1 / 3, atol=1e-3)


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"pop": [[1, 2]]}, "pop"),
        ({"k": 0}, "k"),
        ({"k": 2.5}, "k"),
        ({"beta": -0.1}, "beta"),
        ({"beta": np.nan}, "beta"),
        ({"beta": 0.1, "reference": [0.5, 0.5]}, "reference"),
        ({"beta": 0.1, "reference": [0.5, 0.6, -0.1]}, "reference"),
        ({"tol": 0.0}, "tol"),
        ({"tol": -1e-9}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": 3.0}, "max_iter"),
    ],
)
def test_solve_multiplayer_rejects_bad_input_naming_the_argument(kwargs, name):
    args = {"pop": Population(CONDORCET), "k": 2}
    args.update(kwargs)
    pop, k = args.pop("pop"), args.pop("k")
    with pytest.raises(ValueError, match=f"^{name} "):
        solve_multiplayer(pop, k, **args)


def test_solve_nlhf_rejects_a_negative_beta():
    with pytest.raises(ValueError, match="^beta "):
        solve_nlhf(Population(CONDORCET), beta=-1.0)
