"""How often the reproduction check passes, and how much power it has, at a given size.

The HTTP run of the check (tests/test_reproduction.py, `manage.py reproduce_theory`) is too slow
to repeat over many seeds, so this script replays its design without HTTP: the same study,
fits and items (built by `studies.reproduction.build_study` in a throw-away SQLite database),
then for each seed it draws the annotators' picks with `workers.policies.choose` (per-position ties), packs the
items into annotators of `items_per_participant` as the assignment does (each item's
annotations go to distinct annotators), and computes, as `studies.estimate.results` does, the headline
f̂(k) (the adversary cell, `workers.stats.intervals.design_interval`) and the conservative min over
opponents (`workers.stats.intervals.robust_win_rate_interval`): items decided
by construction (one text shown) are not annotated but enter as `decided` rows at credit
k/(k+m), weighted `annotations` (every other item is judged `annotations` times here).

It reports, over seeds (each seed also rebuilds the items from a new study seed):
- coverage: the share of seeds where every headline interval and every min band covers the
  theory (the check passes);
- power: the share where NLHF's headline f̂(k_max) interval lies below k/(k+1) and the
  multiplayer's lies above NLHF's theory (the check tells the two policies apart).

`--population` takes the command's specs, e.g. `tied` or `condorcet@m=2`.

    .venv/bin/python bench/reproduction_power.py --population majority:0.6 --prompts 8 --seeds 100
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", default="majority:0.6")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", default="1,2,4")
    parser.add_argument("--replicates", type=int, default=1)
    parser.add_argument("--annotations", type=int, default=3)
    parser.add_argument("--items-per-participant", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--policies", default="nlhf,multiplayer", help="one study per group: 'nlhf,multiplayer' or 'nlhf/multiplayer'")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="ualign-power-")
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/power.sqlite3"
    os.environ["UALIGN_VAR_DIR"] = tmp
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from studies import reproduction
    from studies.models import ComparisonItem, Policy
    from workers.policies import Population, choose
    from workers.stats import intervals

    population, m = reproduction.parse_check(args.population)
    k_values = tuple(int(k) for k in args.k.split(","))
    k_max = max(k_values)
    passed = powerful = shortfall = 0
    to_judge_total = decided_total = 0
    misses: dict[tuple, int] = defaultdict(int)
    for seed in range(args.seeds):
        cells: dict[tuple, list] = defaultdict(list)
        n_items = 0
        for g, group in enumerate(args.policies.split("/")):
            design = reproduction.ReproductionDesign(prompts=args.prompts, k_values=k_values, replicates=args.replicates,
                                         annotations_per_item=args.annotations,
                                         items_per_participant=args.items_per_participant, seed=seed,
                                         policies=tuple(group.split(",")), opponent_outputs=m)
            study = reproduction.build_study(population, design, slug=f"power-{seed}-{g}")
            rng = np.random.default_rng([seed, g, 1])
            every = list(ComparisonItem.objects.filter(study=study).select_related("policy").prefetch_related("shown"))
            items = [item for item in every if item.needs_judgment]
            for item in every:
                if not item.needs_judgment:
                    cells[(item.policy.kind, item.k)].append(
                        (item.k / (item.k + item.m), item.prompt_id, -item.pk, item.opponent_label, args.annotations, True))
            n_items += len(items)
            to_judge_total += len(items)
            decided_total += len(every) - len(items)
            # Pack: annotation round r of every item, shuffled, cut into annotators.
            slots = [(item, r) for r in range(args.annotations) for item in rng.permutation(len(items))]
            for pos, (i, _r) in enumerate(slots):
                item = items[int(i)]
                annotator = (g, pos // args.items_per_participant)
                shown = list(item.shown.all())
                cand_cols = [s.candidate.sample_index for s in shown]
                positions = [s.count_policy + s.count_opponent for s in shown]  # per-position ties (§1)
                pick = int(choose(Population(population.utilities[:, cand_cols], population.weights), positions, rng))
                s = shown[pick]
                cells[(item.policy.kind, item.k)].append(
                    (s.count_policy / (s.count_policy + s.count_opponent), item.prompt_id, hash(annotator),
                     item.opponent_label, 1.0, False))
            reproduction.discard_study(study)
        ok = True
        sep = {}
        for (kind, k), rows in cells.items():
            credit, prompts, people, opponents, weights, decided = map(np.array, zip(*rows, strict=True))
            decided = decided.astype(bool)
            r = intervals.robust_win_rate_interval(credit, prompts, people, opponents, weights=weights,
                                                  decided=decided, confidence=args.confidence, rng=seed,
                                                  few_clusters=True)
            adv = opponents == "adversary"
            head = intervals.design_interval(credit[adv], prompts[adv], people[adv], weights=weights[adv],
                                            decided=decided[adv], confidence=args.confidence)
            theory = population.theory(kind, k, m)
            if not (r.low <= theory <= r.high and head.low <= theory <= head.high):
                ok = False
                misses[(kind, k)] += 1
            if k == k_max:
                sep[kind] = head
        passed += ok
        nlhf, mp = sep.get(Policy.Kind.NLHF), sep.get(Policy.Kind.MULTIPLAYER)
        if nlhf is not None and mp is not None:
            shortfall += bool(nlhf.high < k_max / (k_max + 1))
            powerful += bool(nlhf.high < k_max / (k_max + 1)) and bool(mp.low > population.theory(Policy.Kind.NLHF, k_max, m))
    print(f"population {population.name}, prompts {args.prompts}, k {k_values}, replicates {args.replicates}, "
          f"annotations/item {args.annotations}: per seed {to_judge_total / args.seeds:.1f} items to judge "
          f"({to_judge_total * args.annotations / args.seeds:.1f} judgments) and {decided_total / args.seeds:.1f} "
          "decided by construction")
    print(f"check passes (every headline interval and min-over-opponents band covers the theory): {passed}/{args.seeds}")
    print(f"power (NLHF below {k_max}/{k_max + 1} and multiplayer above NLHF's theory at k={k_max}): "
          f"{powerful}/{args.seeds}")
    print(f"NLHF's shortfall detected (its f̂({k_max}) interval lies below {k_max}/{k_max + 1}): {shortfall}/{args.seeds}")
    if misses:
        print("misses by (policy, k):", dict(misses))


if __name__ == "__main__":
    main()
