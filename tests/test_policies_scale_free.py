"""Scale-free single rewards for CTRL and best-of-N (issue #11.5), pure NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.policies import (
    Population,
    best_of_k_win_rate,
    best_of_n_policy,
    calibrate,
    fit_ctrl,
    kl_divergence,
    quantile_rewards,
)


def two_source_population(seed, n=12):
    """Four 'log-odds' types (scale ~3) and four 'cosine' types (in [-1, 1]), a tie or two."""
    rng = np.random.default_rng(seed)
    logodds = np.round(3.0 * rng.standard_normal((4, n)), 1)
    cosine = np.tanh(rng.standard_normal((4, n)))
    return np.vstack([logodds, cosine]), rng.dirichlet(np.ones(8)), rng.dirichlet(np.ones(n))


RESCALINGS = [
    ("times ten", lambda x: 10.0 * x),
    ("exp", np.exp),
    ("cube plus shift", lambda x: x**3 + 5.0),
]


@pytest.mark.parametrize(("name", "transform"), RESCALINGS)
def test_rescaling_one_type_moves_neither_the_rewards_nor_the_fitted_policies(name, transform):
    moved_raw = 0
    for seed in range(20):
        u, w, mu = two_source_population(seed)
        v = u.copy()
        v[seed % 8] = transform(u[seed % 8])
        before, after = Population(u, w), Population(v, w)
        r0, r1 = quantile_rewards(before, mu), quantile_rewards(after, mu)
        np.testing.assert_allclose(r1, r0, atol=1e-15)
        for k in (1, 2, 4):
            np.testing.assert_allclose(fit_ctrl(r1, mu, k).policy, fit_ctrl(r0, mu, k).policy, atol=1e-12)
            np.testing.assert_allclose(best_of_n_policy(r1, mu, k), best_of_n_policy(r0, mu, k), atol=1e-15)
        moved_raw += int(np.argmax(w @ u) != np.argmax(w @ v))
    if name != "cube plus shift":
        # the mean of raw utilities is not scale-free: the same rescaling moves its argmax
        assert moved_raw > 0


def test_quantile_reward_of_one_type_is_its_calibration_and_ties_take_half_their_mass():
    r, mu = np.array([0.2, 0.5, 0.5, 0.9]), np.array([0.4, 0.1, 0.3, 0.2])
    np.testing.assert_allclose(quantile_rewards(Population(r[None, :]), mu), calibrate(r, mu), atol=1e-15)
    two = Population(np.array([r, -r]), [0.25, 0.75])
    np.testing.assert_allclose(quantile_rewards(two, mu), 0.25 * calibrate(r, mu) + 0.75 * calibrate(-r, mu))


def brute_best_of_k(r, pi, mu, k):
    """Enumerate k draws from pi and k from mu; the top reward wins, ties split per position."""
    n, total = r.size, 0.0
    for xs in itertools.product(range(n), repeat=k):
        for ys in itertools.product(range(n), repeat=k):
            p = np.prod(pi[list(xs)]) * np.prod(mu[list(ys)])
            top = max(r[list(xs)].max(), r[list(ys)].max())
            a, b = (r[list(xs)] == top).sum(), (r[list(ys)] == top).sum()
            total += p * a / (a + b)
    return total


@pytest.mark.parametrize("k", [1, 2, 3])
def test_best_of_k_win_rate_splits_ties_per_position(k):
    r = np.array([1.0, 2.0, 2.0, 3.0])
    pi, mu = np.array([0.1, 0.5, 0.2, 0.2]), np.array([0.4, 0.2, 0.3, 0.1])
    assert best_of_k_win_rate(r, pi, mu, k) == pytest.approx(brute_best_of_k(r, pi, mu, k), abs=1e-12)
    assert best_of_k_win_rate(r, mu, mu, k) == pytest.approx(0.5, abs=1e-12)


def test_ctrl_picks_the_identity_transform_at_k_1_and_hits_the_kl_target():
    for seed in range(8):
        u, w, mu = two_source_population(seed)
        r = quantile_rewards(Population(u, w), mu)
        fit = fit_ctrl(r, mu, 1)
        assert fit.transform == "identity"
        assert kl_divergence(fit.policy, mu) == pytest.approx(0.5, abs=1e-6)
        for k in (2, 4):  # the search is at least as good as any one member of its grid
            grid_best = fit_ctrl(r, mu, k)
            for t in (1.0, 30.0):
                assert grid_best.score >= fit_ctrl(r, mu, k, t=t).score - 1e-12


def test_ctrl_returns_the_reference_when_the_top_reward_holds_all_its_mass():
    fit = fit_ctrl([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], 2)
    np.testing.assert_array_equal(fit.policy, [1.0, 0.0, 0.0])
    assert "reference" in fit.note


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: quantile_rewards(np.ones((2, 3)), [1 / 3] * 3), "pop"),
        (lambda: quantile_rewards(Population(np.ones((2, 3))), [0.5, 0.5]), "reference"),
        (lambda: fit_ctrl([1.0, 2.0], [0.5, 0.5], 0), "k"),
        (lambda: fit_ctrl([1.0, 2.0], [0.5, 0.5], 2, target_kl=0), "target_kl"),
        (lambda: best_of_k_win_rate([[1.0]], [1.0], [1.0], 1), "rewards"),
    ],
)
def test_scale_free_functions_reject_bad_input_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
