"""Why the demo has the design it has: the planner's predictions and a separation rate (README, docs/planning.md).

Run against a prepared demo (`make run`, or `manage.py serve --demo`), after one pilot of
simulated annotators so that the planner has judgments to estimate variance components from:

    .venv/bin/python bench/demo_design.py [--slug demo] [--repeats 200]

1. **The planner's table.** For design alternatives (largest k, prompts, items per prompt and
   cell), the predicted half-widths of multiplayer's and NLHF's adversary cells at the largest k
   (`workers.stats.planning.predict_widths`, cell means from the prepared items, variance components
   from the study's own judgments, else the literature's defaults), the predicted gap between
   them, and whether the half-widths add up to less than the gap.
2. **How often the intervals separate.** Expected widths below the gap do not make every run
   separate: the estimates scatter around their means too. So the two adversary cells are
   simulated `--repeats` times on the demo's own populations and fits, as the items step draws
   them and as the simulated annotators pick (a type by weight, its favourite shown text), and
   each interval is computed by `workers.stats.intervals.win_rate_interval` as on the results page; the
   table gives the share of repeats whose intervals do not overlap. Prompts are the study's
   first P prompts, so rows with fewer prompts than the study use a subset.

Needs Django (reads the study); SQLite under var/ as `make run` leaves it, or DATABASE_URL.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")

import django  # noqa: E402

django.setup()

import workers.policies as wp  # noqa: E402
from studies.estimate import plans  # noqa: E402
from studies.models import PolicyFit, Study  # noqa: E402
from studies.steps.population import load_population  # noqa: E402
from workers.stats import intervals, planning  # noqa: E402
from workers.stats.study_design import ADVERSARY  # noqa: E402

HEADLINE = ("multiplayer", "nlhf")
ALTERNATIVES = ((5, 1), (12, 1), (12, 2), (12, 3), (12, 4), (16, 2), (16, 3))


@dataclass(frozen=True)
class PromptCase:
    """One prompt's population with the two headline policies' fits at k and their adversaries."""

    pop: wp.Population
    policies: dict[str, np.ndarray]
    adversaries: dict[str, int]


def planner_rows(study: Study, components: planning.VarianceComponents) -> list[str]:
    means, _ = plans.predicted_cell_means(study)
    base = plans.study_design(study)
    rows = []
    for kmax in sorted({4, max(base.k_values)}):
        ks = tuple(k for k in base.k_values if k <= kmax)
        for prompts, replicates in ALTERNATIVES:
            design = replace(base, prompts=prompts, replicates=replicates, k_values=ks)
            widths = planning.predict_widths(design, components, cell_means=means)
            cells = {(c.cell.policy, c.cell.k): c for c in widths.cells if c.cell.opponent == ADVERSARY}
            mp, nl = cells[(HEADLINE[0], kmax)], cells[(HEADLINE[1], kmax)]
            gap, total = mp.mean - nl.mean, mp.half_width + nl.half_width
            rows.append(f"| {kmax} | {prompts} | {replicates} | {design.judgments:,} | {mp.mean:.3f} ± {mp.half_width:.3f} "
                        f"| {nl.mean:.3f} ± {nl.half_width:.3f} | {gap:.3f} | {total:.3f} | {'yes' if total < gap else 'no'} |")
    return rows


def prompt_cases(study: Study, k: int) -> list[PromptCase]:
    """Each prompt's population with the saved NLHF and multiplayer fits at k, and their adversaries
    as the items step finds them (the response most often picked against the policy's k draws)."""
    cases = []
    for prompt in study.prompts.order_by("id"):
        pp = load_population(prompt)
        fits = PolicyFit.objects.filter(prompt=prompt, k=k, policy__name__in=HEADLINE).select_related("policy")
        policies = {fit.policy.name: np.asarray(fit.probabilities, dtype=np.float64) for fit in fits}
        adversaries = {name: int(np.argmax(wp.pick_probability(pp.pop, pi, k))) for name, pi in policies.items()}
        cases.append(PromptCase(pp.pop, policies, adversaries))
    return cases


def _cell(cases: list[PromptCase], name: str, k: int, replicates: int, annotations: int,
          rng: np.random.Generator) -> intervals.WinRateInterval:
    credit, prompt_ids, annotator_ids, decided = [], [], [], []
    for p, case in enumerate(cases):
        for _ in range(replicates):
            ours = Counter(int(i) for i in wp.sample_responses(case.policies[name], k, rng))
            theirs = Counter([case.adversaries[name]])
            shown = sorted(set(ours) | set(theirs))
            if len(shown) == 1:  # decided by construction: one row of credit k/(k+1), weight A
                credit.append(k / (k + 1))
                prompt_ids.append(p)
                annotator_ids.append(-1)
                decided.append(True)
                continue
            for _ in range(annotations):
                t = rng.choice(case.pop.n_types, p=case.pop.weights)
                u = case.pop.utilities[t, shown]
                j = shown[int(rng.choice(np.flatnonzero(u == u.max())))]
                credit.append(ours[j] / (ours[j] + theirs[j]))
                prompt_ids.append(p)
                annotator_ids.append(int(rng.integers(1 << 40)))  # simulated annotators lean nowhere
                decided.append(False)
    weights = np.where(decided, float(annotations), 1.0)
    return intervals.win_rate_interval(credit, prompt_ids, annotator_ids, weights=weights, decided=decided)


def separation_rows(study: Study, repeats: int) -> list[str]:
    k = max(study.k_values)
    cases = prompt_cases(study, k)
    rows = []
    for prompts, replicates in ALTERNATIVES:
        if prompts > len(cases):
            continue
        subset = cases[:prompts]
        separated, widths = 0, {name: [] for name in HEADLINE}
        for repeat in range(repeats):
            rng = np.random.default_rng([repeat, prompts, replicates])
            cells = {name: _cell(subset, name, k, replicates, study.annotations_per_item, rng) for name in HEADLINE}
            separated += cells["nlhf"].high < cells["multiplayer"].low
            for name, cell in cells.items():
                widths[name].append((cell.high - cell.low) / 2)
        rows.append(f"| {k} | {prompts} | {replicates} | {separated / repeats:.0%} | "
                    f"±{np.mean(widths['multiplayer']):.3f} | ±{np.mean(widths['nlhf']):.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slug", default="demo")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    study = Study.objects.get(slug=args.slug)
    components = plans.judgment_components(study) or planning.literature_components()
    for label, comp in (("the study's own judgments", components), ("literature defaults", planning.literature_components())):
        print(f"\nPlanner, variance components from {label}: {comp.source}: prompt {comp.prompt:.3f}, "
              f"item {comp.item:.3f}, annotator {comp.annotator:.3f}, dispersion {comp.dispersion:.3f}")
        print("| largest k | prompts | items per prompt and cell | judgments | multiplayer cell | NLHF cell "
              "| gap | sum of half-widths | separated? |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(planner_rows(study, comp)))
    print(f"\nSeparation rate over {args.repeats} simulated repeats on the demo's own populations")
    print("| k | prompts | items per prompt and cell | separated | multiplayer ± | NLHF ± |")
    print("|---|---|---|---|---|---|")
    print("\n".join(separation_rows(study, args.repeats)))


if __name__ == "__main__":
    main()
