"""Slow: the stopping rules of workers.stats.sequential, simulated (bench/bench_sequential.py).

500 simulated studies per design, watched after every prompt: a false answer when the policies do not
differ at most α = 0.05, and the anytime-valid interval covering the truth at the stopping time at
least 0.95, both up to 2 Monte Carlo standard errors (sd of a 0.05 rate over 500 studies: 0.0097).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_sequential as bench  # noqa: E402

STUDIES = 500
MC = 2 * (0.05 * 0.95 / STUDIES) ** 0.5


def _rate(cell: str | float) -> float:
    return float(str(cell).split(" ± ")[0])


@pytest.mark.slow
@pytest.mark.parametrize("scenario", bench.SCENARIOS, ids=lambda s: s.name)
def test_false_answers_and_coverage_at_the_stop(scenario: bench.Scenario) -> None:
    row = bench.run(scenario, STUDIES, np.random.default_rng(2026))
    assert _rate(row["diff_wrong"]) <= 0.05 + MC
    assert _rate(row["thr_wrong"]) <= 0.05 + MC
    assert _rate(row["diff_judgment"]) <= 0.05 + MC  # read after every judgment, partial prompts in
    assert _rate(row["diff_cover"]) >= 0.95 - MC
    assert _rate(row["thr_cover"]) >= 0.95 - MC
    assert _rate(row["prec_cover"]) >= 0.95 - MC
    if scenario.theta_a == scenario.theta_b:
        # The fixed-time interval read after every prompt finds a difference that is not there.
        assert _rate(row["diff_peek"]) > 0.05 + MC


@pytest.mark.slow
def test_successive_elimination_keeps_every_answer_and_interval_honest() -> None:
    row = bench.many_cells(STUDIES, np.random.default_rng(2026))
    assert _rate(row["wrong"]) <= 0.05 + MC
    assert _rate(row["cover"]) >= 0.95 - MC
