"""The cell interval's variance floor (issue #21): the credits' own variance, not a Bernoulli's.

`credit_variance_floor` is Agresti–Coull's p̃(1 − p̃)/(W + 4) for 0/1 credits, and smaller for
fractional ones; degenerate cells (all credits equal, one cluster, 2–5 clusters) keep a non-zero
width; the planner floors with the same function. The slow test reruns a reduced version of
bench/bench_interval_coverage.py (docs/benchmarks.md, "Interval coverage on fractional credits").
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from workers.stats import intervals, planning


def _agresti_coull(credit: np.ndarray, weights: np.ndarray) -> float:
    total = float(weights.sum())
    shrunk = (float(weights @ credit) + 2) / (total + 4)
    return shrunk * (1 - shrunk) / (total + 4)


def _floor_of(credit: np.ndarray, weights: np.ndarray | None = None) -> float:
    w = np.ones(credit.size) if weights is None else weights
    total = float(w.sum())
    mean = float(w @ credit) / total
    return intervals.credit_variance_floor(total, mean, float(w @ (credit - mean) ** 2) / total)


@pytest.mark.parametrize("seed", range(5))
def test_the_floor_is_agresti_coull_for_binary_credits(seed):
    rng = np.random.default_rng(seed)
    credit = (rng.random(40) < rng.random()).astype(float)
    weights = rng.uniform(0.5, 3, 40)
    assert _floor_of(credit, weights) == pytest.approx(_agresti_coull(credit, weights), rel=1e-12)
    assert _floor_of(credit) == pytest.approx(_agresti_coull(credit, np.ones(40)), rel=1e-12)


def test_fractional_credits_get_a_smaller_floor_than_a_bernoulli_of_their_mean():
    rng = np.random.default_rng(3)
    credit = rng.choice([0.5, 0.75, 1.0], size=2000, p=[0.2, 0.3, 0.5])
    floor = _floor_of(credit)
    bernoulli = _agresti_coull(credit, np.ones(credit.size))
    assert floor < 0.5 * bernoulli
    # ... and close to the credits' own i.i.d. variance of the mean (the pseudo-credits fade).
    assert floor == pytest.approx(credit.var() / credit.size, rel=0.05)


@pytest.mark.parametrize("value", [0.0, 0.75, 1.0])
def test_all_credits_equal_still_get_a_non_zero_sensible_width(value):
    n_prompts, n_annotators = 20, 10
    p = np.repeat(np.arange(n_prompts), n_annotators)
    a = np.tile(np.arange(n_annotators), n_prompts)
    r = intervals.win_rate_interval(np.full(p.size, value), p, a)
    assert r.estimate == pytest.approx(value)
    assert r.variance["two_way"] == 0
    assert r.variance["prompt"] == 0
    assert r.se > 0
    assert r.high - r.low > 0.005
    assert r.high - r.low < 0.2  # 200 identical credits: a narrow interval, not the whole [0, 1]
    assert r.low <= value <= r.high


def test_one_cluster_gives_the_whole_unit_interval():
    r = intervals.design_interval([0.75, 1.0, 0.5, 0.75], [1, 1, 1, 1], [1, 2, 3, 4])
    assert (r.low, r.high, r.method) == (0.0, 1.0, intervals.METHOD_TOO_FEW)


@pytest.mark.parametrize("clusters", [2, 3, 4, 5])
@pytest.mark.parametrize("value", [0.75, 1.0])
def test_two_to_five_clusters_with_equal_credits_keep_a_non_zero_width(clusters, value):
    p = np.repeat(np.arange(clusters), 6)
    a = np.tile(np.arange(6), clusters)
    r = intervals.design_interval(np.full(p.size, value), p, a)
    assert r.method == intervals.METHOD_FEW
    assert math.isfinite(r.se)
    assert r.se > 0
    assert r.high - r.low > 0.01
    assert r.low <= value <= r.high


@pytest.mark.parametrize("clusters", [2, 3, 4, 5])
def test_few_clusters_are_at_least_as_wide_as_the_floor_says(clusters):
    rng = np.random.default_rng(clusters)
    p = np.repeat(np.arange(clusters), 8)
    a = np.tile(np.arange(8), clusters)
    credit = rng.choice([0.5, 0.75, 1.0], size=p.size)
    r = intervals.design_interval(credit, p, a)
    assert r.se >= math.sqrt(_floor_of(credit)) - 1e-12
    assert 0 < r.high - r.low <= 1


def test_the_planner_floors_with_the_same_function():
    design = planning.Design(prompts=3, k_values=(3,), policies=("a",), annotations_per_item=1,
                             items_per_participant=4, m=1)
    components = planning.VarianceComponents(prompt=0.0, item=0.0, annotator=0.0, dispersion=0.05)
    cell = design.cells[0]
    width = planning._cell_width(design, components, cell, 0.75, 0.95)
    n = width.judgments
    sigma2 = components.dispersion * 0.75 * 0.25
    expected = max(sigma2 / n, intervals.credit_variance_floor(n, 0.75, sigma2))
    assert width.se == pytest.approx(math.sqrt(expected))
    # With binary credits (dispersion 1) it is the Agresti–Coull floor the planner had before.
    binary = planning.VarianceComponents(prompt=0.0, item=0.0, annotator=0.0, dispersion=1.0)
    shrunk = (0.75 * n + 2) / (n + 4)
    assert planning._cell_width(design, binary, cell, 0.75, 0.95).se == pytest.approx(
        math.sqrt(max(0.75 * 0.25 / n, shrunk * (1 - shrunk) / (n + 4)))
    )


def _bench():
    path = Path(__file__).resolve().parent.parent / "bench" / "bench_interval_coverage.py"
    spec = importlib.util.spec_from_file_location("bench_interval_coverage", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["equilibrium", "random"])
def test_fractional_credit_intervals_cover_95_percent_within_monte_carlo_error(kind):
    """300 simulated studies of the bench's common design (30 prompts, 20 annotators), on seeds
    of its own: coverage within 3 Monte Carlo SE (±0.038) of 0.95, and no wider than needed:
    the mean half-width at most 1.15× the oracle's (the Agresti–Coull floor gave 1.6× here)."""
    bench = _bench()
    row = bench.run(kind, bench.DESIGNS[0], 300, seed=2021, uni=bench.universe(kind, n_prompts=200, seed=5))
    mc = math.sqrt(0.95 * 0.05 / 300)
    assert abs(row.after_coverage - 0.95) <= 3 * mc
    assert row.after_ratio <= 1.15
