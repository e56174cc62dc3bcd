"""Slow: adaptive allocation + anytime-valid stopping, simulated (bench/bench_allocation.py).

300 simulated studies per design (the K-part comparison, and the worst of five opponents), the product's rule (`workers.stats.allocation.allocate`) choosing
where each next prompt goes and the study watched after every prompt: a false answer (any part) at
most the family-wise α = 0.05, and every part's anytime-valid interval covering its truth at its
answer and at the stop at least 0.95, both up to 2 Monte Carlo standard errors (sd of a 0.05 rate
over 300 studies: 0.0126). The bench's own figures (1,000 studies) are in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_allocation as bench  # noqa: E402

STUDIES = 300
MC = 2 * (0.05 * 0.95 / STUDIES) ** 0.5


def _rate(cell: str) -> float:
    return float(cell.split(" ± ")[0])


@pytest.mark.slow
@pytest.mark.parametrize("design", bench.DESIGNS, ids=lambda d: d.name)
def test_false_answers_and_coverage_under_adaptive_allocation(design: bench.Design) -> None:
    (row,) = bench.run(design, STUDIES, (1,), np.random.default_rng(2026), baseline=False)
    assert _rate(row["wrong"]) <= bench.ALPHA + MC
    assert _rate(row["cover_answer"]) >= 1 - bench.ALPHA - MC
    assert _rate(row["cover_stop"]) >= 1 - bench.ALPHA - MC
    assert _rate(row["answered"]) > 0.5  # the rule does answer, most of the time, before the cap


@pytest.mark.slow
@pytest.mark.parametrize("design", bench.MIN_DESIGNS, ids=lambda d: d.name)
def test_false_answers_and_coverage_for_the_worst_opponent(design: bench.MinDesign) -> None:
    rows = bench.run_minimum(design, STUDIES, (1,), np.random.default_rng(2026), baseline=False)
    for row in rows:  # with the opponents as a group (elimination, LUCB), and without
        assert _rate(row["wrong"]) <= bench.ALPHA + MC
        assert _rate(row["cover_answer"]) >= 1 - bench.ALPHA - MC
        assert _rate(row["cover_stop"]) >= 1 - bench.ALPHA - MC
