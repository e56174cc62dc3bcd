"""CTRL (InfAlign) and best-of-N policies of workers.policies (theory.md section 5)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.policies import (
    best_of_n_policy,
    beta_for_kl,
    calibrate,
    ctrl_policy,
    kl_divergence,
)

# hand example: rewards with a tie, a non-uniform reference
R = np.array([0.2, 0.5, 0.5, 0.9])
MU = np.array([0.4, 0.1, 0.3, 0.2])
C_HAND = np.array([0.2, 0.6, 0.6, 0.9])  # 0 + .4/2, .4 + .4/2, .4 + .4/2, .8 + .2/2


def test_calibration_is_the_reference_quantile_with_half_the_tied_mass():
    np.testing.assert_allclose(calibrate(R, MU), C_HAND, atol=1e-15)
    np.testing.assert_allclose(
        calibrate([3.0, 1.0, 2.0, 2.0], [0.25] * 4),
        [0.875, 0.125, 0.5, 0.5],
        atol=1e-15,
    )


def test_calibration_of_a_single_reward_level_is_one_half():
    np.testing.assert_allclose(
        calibrate([7.0, 7.0, 7.0], [0.2, 0.3, 0.5]), 0.5, atol=1e-15
    )


@pytest.mark.parametrize(
    ("transform", "phi"),
    [
        ("bon", np.exp(2.0 * C_HAND)),
        ("won", -np.exp(-2.0 * C_HAND)),
        ("identity", C_HAND),
    ],
)
def test_ctrl_policy_is_the_reference_tilted_by_the_transformed_calibrated_reward(
    transform, phi
):
    expected = MU * np.exp(phi / 0.5)
    got = ctrl_policy(R, MU, t=2.0, beta=0.5, transform=transform)
    np.testing.assert_allclose(got, expected / expected.sum(), rtol=1e-13)


def test_ctrl_policy_is_stable_for_tiny_beta_and_keeps_zero_reference_mass_at_zero():
    pi = ctrl_policy(R, [0.4, 0.1, 0.5, 0.0], t=10.0, beta=1e-6)
    assert np.all(np.isfinite(pi))
    np.testing.assert_allclose(
        pi, [0.0, 1 / 6, 5 / 6, 0.0], atol=1e-12
    )  # the tied top pair, in mu ratio


def test_kl_to_the_reference_decreases_as_beta_grows():
    rng = np.random.default_rng(0)
    r, mu = rng.standard_normal(50), rng.dirichlet(np.ones(50))
    for transform in ("bon", "won", "identity"):
        kls = [
            kl_divergence(ctrl_policy(r, mu, t=8.0, beta=b, transform=transform), mu)
            for b in np.geomspace(1e-3, 1e6, 40)
        ]
        kl_max = -np.log(mu[r.argmax()])  # all mass on the top reward
        assert kls[0] <= kl_max + 1e-12
        for a, b in zip(kls, kls[1:], strict=False):
            assert b <= a + 1e-12
            if a < kl_max - 1e-9:  # strictly below saturation: strictly decreasing
                assert b < a
        assert kls[-1] < 1e-4


@pytest.mark.parametrize("transform", ["bon", "won", "identity"])
@pytest.mark.parametrize("target", [0.01, 0.3, 1.5])
def test_beta_for_kl_hits_the_target_kl(transform, target):
    rng = np.random.default_rng(1)
    r, mu = rng.standard_normal(40), rng.dirichlet(np.ones(40))
    beta = beta_for_kl(r, mu, target, t=10.0, transform=transform)
    assert beta > 0
    assert kl_divergence(
        ctrl_policy(r, mu, t=10.0, beta=beta, transform=transform), mu
    ) == pytest.approx(target, rel=1e-8)


def test_beta_for_kl_refuses_a_target_above_the_largest_reachable_kl():
    # the largest KL is reached by putting all mass on the top reward: -log mu(top)
    with pytest.raises(ValueError, match="^target_kl=.* is unreachable"):
        beta_for_kl(R, MU, -np.log(0.2) + 1e-3, t=5.0)
    assert beta_for_kl(R, MU, -np.log(0.2) - 1e-3, t=5.0) > 0


def test_beta_for_kl_refuses_any_target_when_all_rewards_are_equal():
    with pytest.raises(ValueError, match="^target_kl"):
        beta_for_kl([1.0, 1.0, 1.0], [0.2, 0.3, 0.5], 0.1, t=5.0)


def brute_best_of_n(r, mu, n):
    """Enumerate all n-tuples of draws from mu; ties at the top split per position."""
    p = np.zeros(len(r))
    for draws in itertools.product(range(len(r)), repeat=n):
        prob = np.prod(mu[list(draws)])
        top = max(r[j] for j in draws)
        winners = [j for j in draws if r[j] == top]
        for j in winners:
            p[j] += prob / len(winners)
    return p


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_best_of_n_policy_matches_enumeration_with_tied_rewards(n):
    np.testing.assert_allclose(
        best_of_n_policy(R, MU, n), brute_best_of_n(R, MU, n), atol=1e-14
    )


def test_best_of_n_policy_agrees_with_monte_carlo():
    rng = np.random.default_rng(7)
    r, mu = rng.integers(0, 6, size=12).astype(float), rng.dirichlet(np.ones(12))
    n, reps = 4, 200_000
    draws = rng.choice(12, size=(reps, n), p=mu)
    rd = r[draws]
    is_top = rd == rd.max(axis=1, keepdims=True)
    pick = draws[
        np.arange(reps), np.argmax(is_top * rng.random((reps, n)), axis=1)
    ]  # uniform among top positions
    freq = np.bincount(pick, minlength=12) / reps
    p = best_of_n_policy(r, mu, n)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / reps) + 1e-12)


def test_best_of_n_with_distinct_rewards_is_n_u_to_the_n_minus_one_in_quantile_space():
    n_resp, n = 10, 6
    r = np.random.default_rng(3).permutation(n_resp).astype(float)
    p = best_of_n_policy(r, np.full(n_resp, 1 / n_resp), n)
    rank = r.argsort().argsort() + 1  # 1 = worst
    np.testing.assert_allclose(
        p, (rank / n_resp) ** n - ((rank - 1) / n_resp) ** n, atol=1e-15
    )


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: calibrate([1.0, np.nan], [0.5, 0.5]), "rewards"),
        (lambda: calibrate([[1.0, 2.0]], [0.5, 0.5]), "rewards"),
        (lambda: calibrate([1.0, 2.0], [0.5, 0.6]), "reference"),
        (lambda: calibrate([1.0, 2.0], [1.0]), "reference"),
        (lambda: ctrl_policy(R, MU, t=5.0, beta=0.0), "beta"),
        (lambda: ctrl_policy(R, MU, t=5.0, beta=-1.0), "beta"),
        (lambda: ctrl_policy(R, MU, t=0.0, beta=1.0), "t"),
        (lambda: ctrl_policy(R, MU, beta=1.0), "t"),
        (lambda: ctrl_policy(R, MU, t=5.0, beta=1.0, transform="softmax"), "transform"),
        (lambda: ctrl_policy(R, [0.5, 0.5, 0.5, -0.5], t=5.0, beta=1.0), "reference"),
        (lambda: best_of_n_policy(R, MU, 0), "n"),
        (lambda: best_of_n_policy(R, MU, 2.5), "n"),
        (lambda: best_of_n_policy([np.inf, 1.0, 1.0, 1.0], MU, 2), "rewards"),
        (lambda: beta_for_kl(R, MU, 0.0, t=5.0), "target_kl"),
        (lambda: beta_for_kl(R, MU, np.nan, t=5.0), "target_kl"),
        (lambda: beta_for_kl(R, MU, 0.1, t=-5.0), "t"),
        (lambda: kl_divergence([0.5, 0.5], [1.0]), "reference"),
    ],
)
def test_ctrl_functions_reject_bad_input_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        call()
