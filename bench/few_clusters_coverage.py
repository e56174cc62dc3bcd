"""Coverage and width of the few-annotator interval against df = min(G) - 1 (issue #11.6).

    .venv/bin/python bench/few_clusters_coverage.py          # 9 designs x 1,000 studies, ~1 min

Each simulated study: 40 prompts with logit-normal prompt effects (sd 0.8), G annotators
(3, 4 or 5) with annotator effects of sd 0, 0.3 or 0.6, every annotator judging every prompt
about 1,600 / (40 G) times; a judgment credits 1 with probability expit(0.7 + u_p + v_a),
else 0, and 10% are "can't decide" ties credited 2/3. The truth is the population win rate
over prompts and annotators (Gauss-Hermite quadrature). Prints the share of 95% intervals that
cover it and their mean width, for `win_rate_interval` (df = min(G) - 1) and
`few_clusters_interval` (conservative Satterthwaite df).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from scipy import special

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.stats.intervals import few_clusters_interval, win_rate_interval  # noqa: E402

N_STUDIES = 1000


def study(rng, *, n_annotators, sd_annotator, n_prompts=40, judgments=1600, mu=0.7, sd_prompt=0.8, tie=0.1):
    reps = max(1, judgments // (n_prompts * n_annotators))
    u, v = rng.normal(0, sd_prompt, n_prompts), rng.normal(0, sd_annotator, n_annotators)
    p = np.tile(np.repeat(np.arange(n_prompts), reps), n_annotators)
    a = np.repeat(np.arange(n_annotators), n_prompts * reps)
    y = (rng.random(p.size) < special.expit(mu + u[p] + v[a])).astype(float)
    y[rng.random(p.size) < tie] = 2 / 3
    return y, p, a


def truth(*, sd_annotator, mu=0.7, sd_prompt=0.8, tie=0.1):
    x, w = np.polynomial.hermite_e.hermegauss(80)
    binary = np.sum(w * special.expit(mu + np.hypot(sd_prompt, sd_annotator) * x)) / np.sum(w)
    return (1 - tie) * binary + tie * 2 / 3


def main() -> None:
    print("| annotator sd | annotators | df = min(G) - 1: coverage | width | few-clusters: coverage | width | narrower |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for sd_a, g in itertools.product((0.6, 0.3, 0.0), (3, 4, 5)):
        rng = np.random.default_rng(7)
        target = truth(sd_annotator=sd_a)
        hits, few_hits, widths, few_widths = 0, 0, [], []
        for _ in range(N_STUDIES):
            data = study(rng, n_annotators=g, sd_annotator=sd_a)
            usual, few = win_rate_interval(*data), few_clusters_interval(*data)
            hits += usual.low <= target <= usual.high
            few_hits += few.low <= target <= few.high
            widths.append(usual.high - usual.low)
            few_widths.append(few.high - few.low)
        print(f"| {sd_a} | {g} | {hits / N_STUDIES:.3f} | {np.mean(widths):.3f} | {few_hits / N_STUDIES:.3f} "
              f"| {np.mean(few_widths):.3f} | {1 - np.mean(few_widths) / np.mean(widths):.0%} |", flush=True)


if __name__ == "__main__":
    main()
