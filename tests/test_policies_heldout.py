"""workers.policies.heldout: certificates on the fitted pool and on held-out responses."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.policies import (
    Population,
    held_out_certificate,
    multiset_win_rate,
    pick_probability,
    solve_multiplayer,
    split_pool,
)


def gaussian_pool(seed, types=64, n=64):
    """Synthetic Gaussian utilities (impartial culture with sampled types), split 3/4 : 1/4."""
    u = np.random.default_rng(seed).standard_normal((types, n))
    split = split_pool(n, seed)
    return u[:, split.fitted], u[:, split.held_out]


def test_split_pool_is_reproducible_disjoint_and_holds_out_a_quarter_by_default():
    first, again = split_pool(64, 11), split_pool(64, np.random.default_rng(11))
    assert np.array_equal(first.fitted, again.fitted)
    assert np.array_equal(first.held_out, again.held_out)
    assert first.held_out.size == 16
    assert np.array_equal(np.sort(np.concatenate(first)), np.arange(64))
    assert not np.array_equal(first.held_out, split_pool(64, 12).held_out)


@pytest.mark.parametrize(
    ("n", "fraction", "held"), [(1, 0.25, 0), (2, 0.25, 1), (5, 0.25, 1), (6, 0.25, 2), (8, 0.0, 0), (4, 0.9, 3)]
)
def test_split_pool_always_fits_something_and_holds_out_something_when_it_can(n, fraction, held):
    split = split_pool(n, 0, fraction=fraction)
    assert split.held_out.size == held
    assert split.fitted.size == n - held


@pytest.mark.parametrize("k", [2, 4])
def test_a_policy_certified_on_its_pool_is_measured_on_fresh_responses(k):
    held_rates = []
    for seed in range(5):
        fitted, held = gaussian_pool(seed)
        sol = solve_multiplayer(Population(fitted), k)
        cert = held_out_certificate(fitted, held, sol.policy, k)
        g = pick_probability(Population(np.hstack([fitted, held])),
                             np.r_[sol.policy, np.zeros(held.shape[1])], k)
        n_fit = fitted.shape[1]
        assert cert.pool_win_rate == pytest.approx(1 - g[:n_fit].max(), abs=1e-15)
        assert cert.held_out_win_rate == pytest.approx(1 - g[n_fit:].max(), abs=1e-15)
        assert cert.win_rate == min(cert.pool_win_rate, cert.held_out_win_rate)
        assert cert.pool_win_rate >= k / (k + 1) - 1e-8
        assert cert.exploitability <= 1e-8
        assert cert.held_out_adversary.responses[0] >= n_fit
        assert cert.pool_adversary.responses[0] < n_fit
        held_rates.append(cert.held_out_win_rate)
    # the pool certificate overstates what a fresh opponent meets (issue #11.3)
    assert np.mean(held_rates) < k / (k + 1) - 0.01


def test_held_out_certificate_against_two_outputs_is_the_worst_enumerated_multiset():
    fitted, held = gaussian_pool(3, types=12, n=8)
    sol = solve_multiplayer(Population(fitted), 2)
    cert = held_out_certificate(fitted, held, sol.policy, 2, 2)
    pop = Population(np.hstack([fitted, held]))
    pi = np.r_[sol.policy, np.zeros(held.shape[1])]
    n_fit, n = fitted.shape[1], pop.n_responses
    worst_held = min(multiset_win_rate(pop, pi, 2, list(ys))
                     for ys in itertools.combinations_with_replacement(range(n_fit, n), 2))
    worst_all = min(multiset_win_rate(pop, pi, 2, list(ys))
                    for ys in itertools.combinations_with_replacement(range(n), 2))
    assert cert.exact
    assert cert.held_out_win_rate == pytest.approx(worst_held, abs=1e-12)
    assert cert.win_rate == pytest.approx(worst_all, abs=1e-12)
    assert cert.generalisation_gap == pytest.approx(cert.pool_win_rate - cert.held_out_win_rate)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: split_pool(0), "n"),
        (lambda: split_pool(4, fraction=1.0), "fraction"),
        (lambda: split_pool(4, fraction=-0.1), "fraction"),
        (lambda: held_out_certificate(np.ones((3, 2)), np.ones((2, 2)), [0.5, 0.5], 2), "held_out_utilities"),
        (lambda: held_out_certificate(np.ones((3, 2)), np.ones((3, 2)), [1.0], 2), "policy"),
        (lambda: held_out_certificate(np.ones((3, 2)), np.ones((3, 2)), [0.5, 0.5], 0), "k"),
        (lambda: held_out_certificate(np.ones(2), np.ones((3, 2)), [0.5, 0.5], 2), "fitted_utilities"),
    ],
)
def test_held_out_functions_reject_bad_input_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
