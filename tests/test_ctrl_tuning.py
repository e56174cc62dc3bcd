"""CTRL tuned for best-of-k (`workers.policies.ctrl.fit_ctrl`), the study's "ctrl" policy (pure).

That best_of_k_win_rate splits ties per position is checked against enumeration in
test_policies_scale_free.py."""

from __future__ import annotations

import numpy as np
import pytest

from workers.policies import kl_divergence
from workers.policies.ctrl import CTRL_T_GRID, best_of_k_win_rate, fit_ctrl


def test_a_policy_against_itself_wins_half_the_time():
    rewards = np.array([1.0, 2.0, 3.0])
    mu = np.array([0.5, 0.3, 0.2])
    assert best_of_k_win_rate(rewards, mu, mu, 4) == pytest.approx(0.5)


def test_tuned_ctrl_hits_the_target_kl_and_beats_the_reference_at_best_of_k():
    rewards = np.array([0.0, 1.0, 2.0, 3.0])
    mu = np.array([0.4, 0.3, 0.2, 0.1])
    fit = fit_ctrl(rewards, mu, 2, target_kl=0.3)
    assert kl_divergence(fit.policy, mu) == pytest.approx(0.3, rel=1e-6)
    assert fit.transform == "identity" or fit.t in CTRL_T_GRID
    assert fit.score == pytest.approx(best_of_k_win_rate(rewards, fit.policy, mu, 2))
    assert fit.score > 0.5


def test_when_the_top_reward_holds_all_the_mass_ctrl_is_the_reference():
    mu = np.array([0.0, 1.0])
    fit = fit_ctrl(np.array([0.0, 1.0]), mu, 2)
    np.testing.assert_array_equal(fit.policy, mu)
    assert "pi = mu" in fit.note
