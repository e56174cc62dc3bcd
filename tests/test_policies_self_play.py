"""Self-play dynamics of workers.policies (theory.md section 3, "Self-play dynamics").

Pure NumPy: no database.
"""

from __future__ import annotations

import numpy as np
import pytest

from workers.policies import Population, exploitability, pick_probability, self_play

CONDORCET = [[3, 2, 1], [1, 3, 2], [2, 1, 3]]


def majority(alpha):
    """Two responses a, b; a fraction alpha of users prefers a (theory.md section 7)."""
    return Population([[1.0, 0.0], [0.0, 1.0]], [alpha, 1 - alpha])


def test_hedge_self_play_on_the_condorcet_cycle_stays_at_the_uniform_equilibrium():
    traj = self_play(Population(CONDORCET), 2, eta=5.0, n_steps=20)
    np.testing.assert_allclose(traj.policies, 1 / 3, atol=1e-15)
    np.testing.assert_allclose(traj.exploitability_last, 0.0, atol=1e-15)


def test_history_mixture_exploitability_is_average_regret_and_obeys_the_hedge_bound():
    rng = np.random.default_rng(0)
    pop = Population(rng.standard_normal((12, 20)))
    k, n_steps = 3, 400
    eta = np.sqrt(8 * np.log(20) / (n_steps + 1))
    traj = self_play(pop, k, method="hedge", eta=eta, n_steps=n_steps)
    g = np.array([pick_probability(pop, p, k) for p in traj.policies])
    regret = g.sum(axis=0).max() - np.einsum("tn,tn->", traj.policies, g)
    assert traj.exploitability_mixture[-1] == pytest.approx(
        regret / (n_steps + 1), abs=1e-12
    )
    # Hedge regret bound for payoffs in [0, 1]: log N / eta + eta T / 8
    assert (
        traj.exploitability_mixture[-1] <= np.log(20) / (eta * (n_steps + 1)) + eta / 8
    )
    # worst-case win rate of the history mixture is k/(k+1) - Regret/T
    worst = 1 - g.mean(axis=0).max()
    assert worst == pytest.approx(
        k / (k + 1) - traj.exploitability_mixture[-1], abs=1e-12
    )


def test_self_play_records_thinned_policies_and_their_time_average():
    pop = Population(np.random.default_rng(1).standard_normal((5, 6)))
    traj = self_play(pop, 2, method="optimistic", eta=2.0, n_steps=25, record_every=10)
    np.testing.assert_array_equal(traj.steps, [0, 10, 20, 25])
    assert traj.policies.shape == (4, 6)
    assert traj.average_policies.shape == (4, 6)
    assert traj.exploitability_last.shape == (26,)
    assert traj.exploitability_mixture.shape == (26,)
    full = self_play(pop, 2, method="optimistic", eta=2.0, n_steps=25)
    np.testing.assert_allclose(
        traj.average_policies[-1], full.policies.mean(axis=0), atol=1e-15
    )
    assert traj.exploitability_average[-1] == pytest.approx(
        exploitability(pop, full.policies.mean(axis=0), 2), abs=1e-15
    )


def test_optimistic_hedge_last_iterate_approaches_the_equilibrium_on_a_small_game():
    pop = majority(0.6)
    traj = self_play(pop, 2, method="optimistic", eta=1.0, n_steps=2000)
    assert traj.exploitability_last[-1] < 1e-3 < traj.exploitability_last[0]
    assert traj.policy[0] == pytest.approx(0.8, abs=1e-2)


def test_self_play_keeps_zero_initial_mass_at_zero():
    traj = self_play(Population(CONDORCET), 1, eta=1.0, n_steps=5, init=[0.5, 0.5, 0.0])
    assert np.all(traj.policies[:, 2] == 0.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"method": "sgd"}, "method"),
        ({"eta": 0.0}, "eta"),
        ({"eta": np.inf}, "eta"),
        ({"n_steps": 0}, "n_steps"),
        ({"init": [1.0, 0.0]}, "init"),
        ({"record_every": 0}, "record_every"),
        ({"k": -2}, "k"),
    ],
)
def test_self_play_rejects_bad_input_naming_the_argument(kwargs, name):
    args = {"k": 2, "eta": 1.0, "n_steps": 3}
    args.update(kwargs)
    k = args.pop("k")
    with pytest.raises(ValueError, match=f"^{name} "):
        self_play(Population(CONDORCET), k, **args)
