"""workers.policies.lp: the k = 1 equilibrium by a double oracle of HiGHS LPs."""

from __future__ import annotations

import numpy as np
import pytest

from workers.policies import Population, exploitability, solve_multiplayer, solve_nlhf
from workers.policies.lp import K1_FULL_SHARE, _extend_majority, solve_k1
from workers.policies.population import _majority_matrix


def cyclic(n, seed=0):
    """Latin-square preferences, relabelled, slight noise, uneven weights (support ~3/4 of N)."""
    rng = np.random.default_rng(seed)
    u = (np.arange(n)[None, :] - np.arange(n)[:, None]) % n
    u = u[rng.permutation(n)][:, rng.permutation(n)] + 0.01 * rng.standard_normal((n, n))
    return Population(u, rng.dirichlet(np.full(n, 5.0)))


@pytest.mark.parametrize("ties", [False, True])
def test_the_majority_matrix_grown_block_by_block_equals_the_direct_one(ties):
    rng = np.random.default_rng(3)
    u = rng.integers(0, 4, (40, 150)) if ties else rng.standard_normal((40, 150))
    pop = Population(u.astype(float), rng.dirichlet(np.ones(40)))
    first, rest = np.arange(0, 150, 3), np.setdiff1d(np.arange(150), np.arange(0, 150, 3))
    grown = _extend_majority(pop, _extend_majority(pop, np.empty((0, 0)), np.empty(0, np.intp), first),
                             first, rest)
    order = np.concatenate([first, rest])
    np.testing.assert_allclose(grown, _majority_matrix(pop)[np.ix_(order, order)], atol=1e-13)


@pytest.mark.parametrize("population", ["cyclic", "gauss", "likert"])
def test_k1_is_certified_whatever_the_size_of_the_support(population):
    rng = np.random.default_rng(5)
    pop = {
        "cyclic": lambda: cyclic(120),
        "gauss": lambda: Population(rng.standard_normal((200, 300))),
        "likert": lambda: Population(rng.integers(1, 6, (30, 60)).astype(float)),
    }[population]()
    policy, n_lp, method, reached = solve_k1(pop, 1e-9, 100)
    assert reached
    assert exploitability(pop, policy, 1) <= 1e-9
    support = int(np.count_nonzero(policy))
    assert ("whole game" in method) == (population == "cyclic")
    if population == "cyclic":
        assert support > K1_FULL_SHARE * pop.n_responses


def test_solve_nlhf_uses_the_lp_and_keeps_its_certificate():
    pop = cyclic(90, seed=2)
    sol = solve_nlhf(pop, tol=1e-10)
    assert sol.converged
    assert "LP" in sol.method
    assert sol.exploitability == exploitability(pop, sol.policy, 1)
    assert solve_multiplayer(pop, 1, tol=1e-10).exploitability <= 1e-10
