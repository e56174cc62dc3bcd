"""Interval time for 100,000 judgments with 2,000 resamples (issue #6; target < 2 s).

Baseline, measured in the same run: an iid percentile bootstrap of the mean with the same
2,000 resamples (what a Chatbot-Arena-style interval costs), drawn in batches.

    .venv/bin/python bench/bench_bootstrap.py
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.stats.intervals import robust_win_rate_interval, win_rate_interval  # noqa: E402

N, RESAMPLES, REPEATS = 100_000, 2_000, 3


def best_of(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def iid_bootstrap(credit: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    means = np.empty(RESAMPLES)
    batch = 50
    for start in range(0, RESAMPLES, batch):
        idx = rng.integers(0, credit.size, size=(batch, credit.size))
        means[start : start + batch] = credit[idx].mean(axis=1)
    return tuple(np.quantile(means, [0.025, 0.975]))


def main() -> None:
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, 2_000, N)
    annotators = rng.integers(0, 1_500, N)
    opponents = rng.integers(0, 3, N)
    credit = (rng.random(N) < 0.6).astype(float)
    baseline = best_of(lambda: iid_bootstrap(credit, np.random.default_rng(1)))
    cell = best_of(lambda: win_rate_interval(credit, prompts, annotators, n_resamples=RESAMPLES, rng=1))
    robust = best_of(lambda: robust_win_rate_interval(credit, prompts, annotators, opponents, n_resamples=RESAMPLES, rng=1))
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}, numpy {np.__version__}")
    print(f"judgments: {N:,}; resamples: {RESAMPLES:,}; 2,000 prompts x 1,500 annotators; best of {REPEATS}")
    print(f"iid bootstrap (baseline):                 {baseline:.3f} s  (1.00x)")
    print(f"win_rate_interval (two-way CGM):          {cell:.3f} s  ({cell / baseline:.3f}x)")
    print(f"robust_win_rate_interval (3 opponents):   {robust:.3f} s  ({robust / baseline:.3f}x)")


if __name__ == "__main__":
    main()
