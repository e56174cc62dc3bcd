"""workers.policies.choice: one per-position tie rule for choices, credit and adversaries.

Pure NumPy: no database. Brute force lays out every position of the shown list and applies
theory.md section 1 literally (a type picks a top position, each equally likely), on
populations that tie often: Likert-like integer utilities and coarse persona scores.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.policies import (
    Population,
    adversary,
    choice_probabilities,
    choose,
    expected_credit,
    find_adversary,
    m_output_bound,
    multiset_win_rate,
    pick_probability,
    robust_win_rate,
    robust_win_rate_m,
    solve_multiplayer,
    win_rate,
)

CONDORCET_WINNER = Population([[3, 2, 1], [1, 3, 2], [2, 1, 3]], [0.52, 0.24, 0.24])


def tie_heavy(seed, kind, t=5, n=4):
    """Likert-like (1..5) or coarse persona scores ({0, 0.5, 1}); random type weights."""
    rng = np.random.default_rng(seed)
    u = rng.integers(1, 6, (t, n)) if kind == "likert" else rng.choice([0.0, 0.5, 1.0], (t, n))
    return Population(u.astype(float), rng.dirichlet(np.ones(t)))


def positions(counts):
    return [i for i, c in enumerate(counts) for _ in range(c)]


def brute_choice(pop, counts):
    """P(each response is picked): every top position of the list equally likely."""
    p = np.zeros(pop.n_responses)
    pos = positions(counts)
    for t in range(pop.n_types):
        u = pop.utilities[t, pos]
        top = [pos[j] for j in np.flatnonzero(u == u.max())]
        for i in top:
            p[i] += pop.weights[t] / len(top)
    return p


def brute_credit(pop, ca, cb):
    """P(the picked position is one of the policy's), positions labelled A then B."""
    labelled = [(i, 1.0) for i in positions(ca)] + [(i, 0.0) for i in positions(cb)]
    total = 0.0
    for t in range(pop.n_types):
        u = np.array([pop.utilities[t, i] for i, _ in labelled])
        top = np.flatnonzero(u == u.max())
        total += pop.weights[t] * np.mean([labelled[j][1] for j in top])
    return total


def counts_of(draws, n):
    return np.bincount(np.asarray(draws, dtype=int), minlength=n)


def draws_with_probability(pi, k):
    for xs in itertools.product(range(pi.size), repeat=k):
        p = float(np.prod(pi[list(xs)]))
        if p > 0:
            yield xs, p


# --- choices and credit against brute force ----------------------------------------------------


@pytest.mark.parametrize("kind", ["likert", "persona"])
@pytest.mark.parametrize("seed", range(6))
def test_choice_probabilities_match_enumeration_of_positions_on_tie_heavy_populations(kind, seed):
    pop = tie_heavy(seed, kind)
    rng = np.random.default_rng(100 + seed)
    for _ in range(10):
        counts = rng.integers(0, 3, pop.n_responses)
        counts[rng.integers(pop.n_responses)] += 1
        got = choice_probabilities(pop, counts)
        np.testing.assert_allclose(got, brute_choice(pop, counts), atol=1e-14)
        assert got.sum() == pytest.approx(1.0, abs=1e-14)
        assert np.all(got[counts == 0] == 0)


@pytest.mark.parametrize("kind", ["likert", "persona"])
@pytest.mark.parametrize("seed", range(6))
def test_expected_credit_matches_enumeration_of_labelled_positions(kind, seed):
    pop = tie_heavy(seed, kind)
    rng = np.random.default_rng(200 + seed)
    for _ in range(10):
        ca, cb = rng.integers(0, 3, pop.n_responses), rng.integers(0, 2, pop.n_responses)
        ca[rng.integers(pop.n_responses)] += 1
        cb[rng.integers(pop.n_responses)] += 1
        assert expected_credit(pop, ca, cb) == pytest.approx(brute_credit(pop, ca, cb), abs=1e-14)


def test_one_text_shown_gives_k_over_k_plus_m_and_an_empty_side_gives_all_or_nothing():
    pop = tie_heavy(0, "likert")
    assert expected_credit(pop, [3, 0, 0, 0], [2, 0, 0, 0]) == pytest.approx(3 / 5)
    assert expected_credit(pop, [1, 2, 0, 0], [0, 0, 0, 0]) == 1.0
    assert expected_credit(pop, [0, 0, 0, 0], [0, 1, 1, 0]) == 0.0


@pytest.mark.parametrize(("kind", "k", "m"), [("likert", 3, 1), ("persona", 2, 2), ("likert", 1, 2)])
def test_expected_credit_averaged_over_the_draws_is_the_solvers_win_rate(kind, k, m):
    """The item prediction and the solver's win rate use the same rule: exact agreement."""
    for seed in range(4):
        pop = tie_heavy(seed, kind)
        rng = np.random.default_rng(seed)
        pi, sigma = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
        total = sum(
            px * py * expected_credit(pop, counts_of(xs, 4), counts_of(ys, 4))
            for xs, px in draws_with_probability(pi, k)
            for ys, py in draws_with_probability(sigma, m)
        )
        assert total == pytest.approx(win_rate(pop, pi, k, sigma, m), abs=1e-12)


@pytest.mark.parametrize("kind", ["likert", "persona"])
def test_one_minus_the_expected_credit_against_one_response_is_its_pick_probability(kind):
    for seed in range(4):
        pop = tie_heavy(seed, kind)
        pi = np.random.default_rng(seed).dirichlet(np.ones(4))
        for k in (1, 2, 3):
            g = [
                1.0 - sum(p * expected_credit(pop, counts_of(xs, 4), np.eye(4, dtype=int)[i])
                          for xs, p in draws_with_probability(pi, k))
                for i in range(4)
            ]
            np.testing.assert_allclose(g, pick_probability(pop, pi, k), atol=1e-12)


def test_an_equilibrium_certified_at_k_3_keeps_three_quarters_under_the_annotators_rule():
    """The issue's case: 4-response Likert populations, certified policies, per-position picks."""
    for seed in range(5):
        pop = tie_heavy(seed, "likert", t=6)
        sol = solve_multiplayer(pop, 3)
        worst = adversary(pop, sol.policy, 3)
        predicted = sum(p * expected_credit(pop, counts_of(xs, 4), np.eye(4, dtype=int)[worst[0]])
                        for xs, p in draws_with_probability(sol.policy, 3))
        assert predicted >= 0.75 - 1e-9
        assert predicted == pytest.approx(robust_win_rate(pop, sol.policy, 3), abs=1e-12)


# --- simulated annotators --------------------------------------------------------------------


def test_choose_draws_picks_with_the_choice_probabilities_and_is_reproducible():
    pop = tie_heavy(3, "persona")
    counts = [2, 1, 0, 1]
    picks = choose(pop, counts, 7, size=40_000)
    freq = np.bincount(picks, minlength=4) / picks.size
    np.testing.assert_allclose(freq, choice_probabilities(pop, counts), atol=0.01)
    assert freq[2] == 0
    assert np.array_equal(picks, choose(pop, counts, 7, size=40_000))
    assert isinstance(choose(pop, counts, np.random.default_rng(1)), int)


def test_luce_choice_tends_to_the_tie_rule_when_cold_and_to_the_counts_when_hot():
    for seed in range(4):
        pop = tie_heavy(seed, "likert")
        counts = np.array([1, 2, 1, 3])
        np.testing.assert_allclose(choice_probabilities(pop, counts, luce_temperature=1e-3),
                                   choice_probabilities(pop, counts), atol=1e-12)
        np.testing.assert_allclose(choice_probabilities(pop, counts, luce_temperature=1e6),
                                   counts / counts.sum(), atol=1e-5)


# --- the worst m-output opponent ---------------------------------------------------------------


def exhaustive_worst(pop, pi, k, m, candidates=None):
    cand = range(pop.n_responses) if candidates is None else candidates
    return min(multiset_win_rate(pop, pi, k, list(ys))
               for ys in itertools.combinations_with_replacement(cand, m))


@pytest.mark.parametrize("kind", ["likert", "persona", "gauss"])
@pytest.mark.parametrize(("k", "m"), [(1, 2), (2, 2), (3, 2), (2, 3)])
def test_adversary_is_the_worst_multiset_found_by_exhaustive_enumeration(kind, k, m):
    for seed in range(3):
        if kind == "gauss":
            pop = Population(np.random.default_rng(seed).standard_normal((6, 5)))
        else:
            pop = tie_heavy(seed, kind, t=6, n=5)
        pi = np.random.default_rng(50 + seed).dirichlet(np.ones(5))
        found = find_adversary(pop, pi, k, m)
        assert found.exact
        assert found.gap == 0
        assert len(found.responses) == m
        assert found.win_rate == pytest.approx(exhaustive_worst(pop, pi, k, m), abs=1e-12)
        assert multiset_win_rate(pop, pi, k, found.responses) == pytest.approx(found.win_rate, abs=1e-12)
        assert found.win_rate == robust_win_rate_m(pop, pi, k, m)  # same kernel: bit for bit


def test_multiset_win_rate_is_the_average_credit_over_the_policys_draws():
    pop = tie_heavy(2, "likert")
    pi = np.array([0.1, 0.4, 0.3, 0.2])
    for ys in ([1, 1], [0, 3, 3], [2]):
        brute = sum(p * expected_credit(pop, counts_of(xs, 4), counts_of(ys, 4))
                    for xs, p in draws_with_probability(pi, 2))
        assert multiset_win_rate(pop, pi, 2, ys) == pytest.approx(brute, abs=1e-12)


def test_the_single_output_adversary_attains_the_robust_win_rate_exactly():
    for seed in range(5):
        pop = tie_heavy(seed, "persona")
        pi = np.random.default_rng(seed).dirichlet(np.ones(4))
        for k in (1, 2, 4):
            found = find_adversary(pop, pi, k)
            assert found.win_rate == robust_win_rate(pop, pi, k)
            g = pick_probability(pop, pi, k)
            assert g[found.responses[0]] == g.max()


def test_a_restricted_adversary_only_uses_the_candidates():
    pop = tie_heavy(4, "likert", t=6, n=6)
    pi = np.full(6, 1 / 6)
    found = find_adversary(pop, pi, 2, 2, candidates=[4, 5])
    assert set(found.responses) <= {4, 5}
    assert found.win_rate == pytest.approx(exhaustive_worst(pop, pi, 2, 2, [4, 5]), abs=1e-12)


def test_the_search_bounds_the_true_minimum_from_both_sides_when_it_cannot_enumerate():
    hits = 0
    for seed in range(12):
        pop = Population(np.random.default_rng(seed).integers(0, 4, (8, 6)).astype(float))
        pi = np.random.default_rng(seed + 1).dirichlet(np.ones(6))
        exact = exhaustive_worst(pop, pi, 2, 3)
        found = find_adversary(pop, pi, 2, 3, max_work=0)
        assert not found.exact
        assert found.lower_bound - 1e-12 <= exact <= found.win_rate + 1e-12
        assert multiset_win_rate(pop, pi, 2, found.responses) == pytest.approx(found.win_rate)
        hits += found.win_rate == pytest.approx(exact, abs=1e-12)
    assert hits >= 9  # the local search usually finds the optimum on these small instances


def test_condorcet_winner_instance_the_worst_two_responses_hold_the_equilibrium_to_0_417():
    """Issue #11: 0.52/0.24/0.24, k = 2, m = 2; m copies of the single adversary are milder."""
    sol = solve_multiplayer(CONDORCET_WINNER, 2)
    found = find_adversary(CONDORCET_WINNER, sol.policy, 2, 2)
    assert found.win_rate == pytest.approx(0.4172, abs=5e-4)
    copies = multiset_win_rate(CONDORCET_WINNER, sol.policy, 2, adversary(CONDORCET_WINNER, sol.policy, 2) * 2)
    assert copies > found.win_rate + 0.1
    bound = m_output_bound(2, 2)
    assert bound.guaranteed == pytest.approx(1 / 3)
    assert bound.ceiling == pytest.approx(0.5)
    assert bound.guaranteed <= found.win_rate <= bound.ceiling


# --- the m-output bound ------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "m"), [(1, 2), (2, 2), (2, 3), (3, 2), (4, 3)])
def test_m_output_bound_holds_for_equilibria_and_any_policy_on_small_instances(k, m):
    for seed in range(8):
        rng = np.random.default_rng(seed)
        u = rng.integers(0, 3, (5, 4)) if seed % 2 else rng.standard_normal((5, 4))
        pop = Population(u.astype(float), rng.dirichlet(np.ones(5)))
        sol = solve_multiplayer(pop, k)
        worst = robust_win_rate_m(pop, sol.policy, k, m)
        bound = m_output_bound(k, m)
        assert bound.guaranteed - 1e-9 <= worst <= bound.ceiling + 1e-12
        pi = rng.dirichlet(np.ones(4))
        own = m_output_bound(k, m, single_output_rate=robust_win_rate(pop, pi, k))
        assert own.guaranteed - 1e-12 <= robust_win_rate_m(pop, pi, k, m) <= own.ceiling + 1e-12


@pytest.mark.parametrize(("k", "m"), [(1, 2), (2, 2), (2, 3), (3, 2)])
def test_the_guarantee_is_attained_by_an_equilibrium_so_it_cannot_be_raised(k, m):
    """Types t_j (weight 1/(k+1)) prefer only y_j to x; the rest prefer x: delta_x is an equilibrium."""
    n = m + 1  # x = 0, y_j = j
    rows, weights = [], []
    for j in range(1, m + 1):
        row = np.zeros(n)
        row[0], row[j] = 1.0, 2.0
        rows.append(row)
        weights.append(1 / (k + 1))
    rows.append(np.r_[2.0, np.ones(m)])
    weights.append(1 - m / (k + 1))
    pop = Population(np.array(rows), np.array(weights))
    delta_x = np.eye(n)[0]
    assert max(pick_probability(pop, delta_x, k)) == pytest.approx(1 / (k + 1))
    assert robust_win_rate_m(pop, delta_x, k, m) == pytest.approx(m_output_bound(k, m).guaranteed, abs=1e-12)


def test_at_one_output_the_bound_is_k_over_k_plus_one():
    assert m_output_bound(3, 1) == pytest.approx((0.75, 0.75))


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda p: choice_probabilities(p, [1, 0]), "counts"),
        (lambda p: choice_probabilities(p, [0, 0, 0]), "counts"),
        (lambda p: choice_probabilities(p, [1, -1, 1]), "counts"),
        (lambda p: choice_probabilities(p, [0.5, 1, 1]), "counts"),
        (lambda p: choice_probabilities(p, [1, 1, 1], luce_temperature=0), "luce_temperature"),
        (lambda p: expected_credit(p, [0, 0, 0], [0, 0, 0]), "policy_counts"),
        (lambda p: expected_credit(p, [1, 0, 0], [1, 0]), "opponent_counts"),
        (lambda p: find_adversary(p, [1 / 3] * 3, 2, 0), "m"),
        (lambda p: find_adversary(p, [1 / 3] * 3, 2, 2, candidates=[5]), "candidates"),
        (lambda p: multiset_win_rate(p, [1 / 3] * 3, 2, []), "responses"),
        (lambda p: m_output_bound(2, 2, single_output_rate=1.5), "single_output_rate"),
        (lambda p: choose(p, [1, 1, 1], -3), "rng"),
    ],
)
def test_choice_functions_reject_bad_input_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call(Population([[1.0, 2.0, 2.0]]))
