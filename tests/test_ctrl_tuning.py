"""CTRL tuned for best-of-k (`workers.policies.ctrl.tune_ctrl`), the study's "ctrl" policy (pure)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.policies import kl_divergence
from workers.policies.ctrl import best_of_k_win_rate, tune_ctrl


def _brute_force(rewards, pi, mu, k):
    """Enumerate every k draws from π and from μ; the better best wins, ties count ½."""
    n = len(rewards)
    total = 0.0
    for a in itertools.product(range(n), repeat=k):
        for b in itertools.product(range(n), repeat=k):
            p = np.prod(pi[list(a)]) * np.prod(mu[list(b)])
            best_a, best_b = max(rewards[list(a)]), max(rewards[list(b)])
            total += p * (1.0 if best_a > best_b else 0.5 if best_a == best_b else 0.0)
    return total


@pytest.mark.parametrize("k", [1, 2, 3])
def test_best_of_k_win_rate_matches_enumerating_every_draw(k):
    rewards = np.array([0.3, 1.0, 0.3, -2.0])
    pi = np.array([0.1, 0.5, 0.2, 0.2])
    mu = np.array([0.25, 0.25, 0.25, 0.25])
    assert best_of_k_win_rate(rewards, pi, mu, k) == pytest.approx(_brute_force(rewards, pi, mu, k), abs=1e-12)


def test_a_policy_against_itself_wins_half_the_time():
    rewards = np.array([1.0, 2.0, 3.0])
    mu = np.array([0.5, 0.3, 0.2])
    assert best_of_k_win_rate(rewards, mu, mu, 4) == pytest.approx(0.5)


def test_tuned_ctrl_hits_the_target_kl_and_beats_the_reference_at_best_of_k():
    rewards = np.array([0.0, 1.0, 2.0, 3.0])
    mu = np.array([0.4, 0.3, 0.2, 0.1])
    pi, stats = tune_ctrl(rewards, mu, 2, target_kl=0.3)
    assert kl_divergence(pi, mu) == pytest.approx(0.3, rel=1e-6)
    assert stats["t"] in (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
    assert stats["bo_k_win_rate_vs_mu"] == pytest.approx(best_of_k_win_rate(rewards, pi, mu, 2))
    assert stats["bo_k_win_rate_vs_mu"] > 0.5


def test_when_the_top_reward_holds_all_the_mass_ctrl_is_the_reference():
    mu = np.array([0.0, 1.0])
    pi, stats = tune_ctrl(np.array([0.0, 1.0]), mu, 2)
    np.testing.assert_array_equal(pi, mu)
    assert "π = μ" in stats["note"]
