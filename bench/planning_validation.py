"""The planner's validation table: predicted vs simulated interval half-widths (docs/planning.md).

For each design, `workers.stats.planning_simulation.simulate_study` draws studies from the planner's
model and `workers.stats.intervals` computes the intervals exactly as the results page does; the table
compares the mean simulated half-width (before clipping to [0, 1]) of cell 0's interval and of
its policy's f̂(k) band with `workers.stats.planning.predict_widths`. The last rows predict with
components *estimated* from one simulated pilot (`estimate_components`), the page's workflow.

    .venv/bin/python bench/planning_validation.py [--studies 400]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.stats import intervals  # noqa: E402
from workers.stats.planning import (  # noqa: E402
    VarianceComponents,
    estimate_components,
    predict_widths,
)
from workers.stats.planning_simulation import simulate_study  # noqa: E402
from workers.stats.study_design import Design  # noqa: E402

TWO = ("a", "b")
DESIGNS = [
    ("30 prompts, A=3", Design(prompts=30, k_values=(1,), policies=TWO, annotations_per_item=3, items_per_participant=10),
     VarianceComponents(prompt=0.3, annotator=0.05), 0.6),
    ("40 prompts, R=2, 18 cells", Design(prompts=40, k_values=(1, 2), policies=("a", "b", "c"), annotations_per_item=2,
                                        items_per_participant=20, replicates=2, attention_check_rate=0.1),
     VarianceComponents(prompt=0.15, item=0.05, annotator=0.05), 0.55),
    ("12 prompts, 6 annotators", Design(prompts=12, k_values=(1,), policies=TWO, annotations_per_item=5,
                                       items_per_participant=40), VarianceComponents(prompt=0.15, annotator=0.15), 0.5),
    ("5 prompts (the demo's size)", Design(prompts=5, k_values=(1, 2, 4), policies=("s", "b", "n", "c", "m"),
                                          annotations_per_item=2, items_per_participant=12, attention_check_rate=0.1),
     VarianceComponents(prompt=0.3, annotator=0.05), 0.6),
    ("100 prompts, A=1", Design(prompts=100, k_values=(4,), policies=TWO, annotations_per_item=1, items_per_participant=20),
     VarianceComponents(prompt=0.2, annotator=0.03), 0.68),
    ("30 prompts, no effects", Design(prompts=30, k_values=(1,), policies=TWO, annotations_per_item=3, items_per_participant=10),
     VarianceComponents(prompt=0.0, annotator=0.0), 0.5),
    ("60 prompts, strong annotators", Design(prompts=60, k_values=(1,), policies=TWO, annotations_per_item=2,
                                            items_per_participant=30), VarianceComponents(prompt=0.1, annotator=0.2), 0.5),
]


def simulate(design, components, means, n, seed):
    first = design.cells[0]
    members = [i for i, c in enumerate(design.cells) if (c.policy, c.k) == (first.policy, first.k)]
    cell, band = [], []
    for s in range(n):
        study = simulate_study(design, components, cell_means=means, rng=[seed, s])
        r = intervals.win_rate_interval(*study.of_cell(0))
        cell.append(stats.t.ppf(0.975, r.df) * r.se if r.df >= 1 else np.inf)
        mask = np.isin(study.cell, members)
        rr = intervals.robust_win_rate_interval(study.credit[mask], study.prompt[mask], study.annotator[mask],
                                               study.cell[mask], rng=s)
        lows = [c.estimate - rr.critical_value * c.se for c in rr.per_opponent]
        highs = [c.estimate + rr.critical_value * c.se for c in rr.per_opponent]
        band.append((min(highs) - min(lows)) / 2)
    return np.array(cell), np.array(band)


def row(label, design, components, truth, mean, n, seed):
    means = dict.fromkeys(design.cells, mean)
    pred = predict_widths(design, components, cell_means=means)
    first = design.cells[0]
    pband = next(r for r in pred.robust if (r.policy, r.k) == (first.policy, first.k))
    cell, band = simulate(design, truth, means, n, seed)
    return (f"| {label} | {design.prompts} | {design.participants} | {pred.cells[0].half_width:.3f} | {cell.mean():.3f} "
            f"| {pred.cells[0].half_width / cell.mean():.2f} | {pband.half_width:.3f} | {band.mean():.3f} "
            f"| {pband.half_width / band.mean():.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400)
    args = parser.parse_args()
    print("| design | prompts | participants | cell: predicted | simulated | ratio | f̂(k) band: predicted "
          "| simulated | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (label, design, comp, mean) in enumerate(DESIGNS):
        print(row(label, design, comp, comp, mean, args.studies, i), flush=True)
    for i, (label, design, truth, mean) in enumerate(DESIGNS[:3]):
        pilot = simulate_study(replace(design, prompts=120), truth, cell_means=dict.fromkeys(design.cells, mean), rng=99 + i)
        est = estimate_components(pilot.credit, pilot.prompt, pilot.annotator, cell_ids=pilot.cell, item_ids=pilot.item)
        print(row(f"{label}, shares from a 120-prompt pilot", design, est, truth, mean, args.studies, 50 + i), flush=True)


if __name__ == "__main__":
    main()
