"""Reproduce theory.md §7 with simulated annotators: f̂(k) of NLHF and the multiplayer policy.

Each check is a population, optionally with an opponent size: 'condorcet@m=2' fields two-output
opponents (the adversary is the worst pair). The default adds, to the two-response majorities and
the Condorcet cycle, a population with tied utilities and the cycle against m = 2.
"""

from __future__ import annotations

import dataclasses
import platform
import time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from studies import reproduction

DEFAULT_POPULATIONS = ["majority:0.6", "majority:0.7", "condorcet", "tied", "condorcet@m=2"]


class Command(BaseCommand):
    help = (
        "Build studies on the two-response majority, Condorcet-cycle and tied-utilities populations (utilities "
        "given directly; the cycle also against two-output opponents), fit NLHF and the multiplayer policy with "
        "the pipeline, fill the items with simulated annotators over HTTP, and print the headline f̂(k) and the "
        "min over opponents with their intervals against the theory. Exits 1 when an interval misses the theory."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--population", action="append", dest="populations",
                            help="'condorcet', 'tied' or 'majority:<alpha>', optionally '@m=<outputs>' (e.g. "
                                 "'condorcet@m=2'); repeat for several (default: {})".format(", ".join(DEFAULT_POPULATIONS)))
        parser.add_argument("--prompts", type=int, default=20)
        parser.add_argument("--k", default="1,2,4", help="k values, comma-separated")
        parser.add_argument("--replicates", type=int, default=3, help="items per (prompt, policy, k, opponent)")
        parser.add_argument("--annotations", type=int, default=3, help="annotations per item")
        parser.add_argument("--items-per-participant", type=int, default=12)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--luce-temperature", type=float, default=None,
                            help="Luce noise on the utilities (the theory assumes none)")
        parser.add_argument("--concurrency", type=int, default=4, help="simulated annotators working at once")
        parser.add_argument("--confidence", type=float, default=0.95)
        parser.add_argument("--base-url", default="",
                            help="a running ualign on the same database (default: serve one in this process)")
        parser.add_argument("--keep", action="store_true", help="keep the studies (default: delete them after)")

    def handle(self, *args, **opts) -> None:
        try:
            populations = [reproduction.parse_check(p) for p in opts["populations"] or DEFAULT_POPULATIONS]
            k_values = tuple(int(k) for k in opts["k"].split(","))
            design = reproduction.ReproductionDesign(prompts=opts["prompts"], k_values=k_values, replicates=opts["replicates"],
                                         annotations_per_item=opts["annotations"],
                                         items_per_participant=opts["items_per_participant"], seed=opts["seed"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        stamp = timezone.now().strftime("%Y%m%d%H%M%S")
        started = time.perf_counter()
        checks = []
        if opts["base_url"]:
            checks = self._run(populations, design, opts, opts["base_url"], stamp)
        else:
            with reproduction.local_server() as url:
                checks = self._run(populations, design, opts, url, stamp)
        seconds = time.perf_counter() - started
        self.stdout.write("")
        self.stdout.write(reproduction.table(checks))
        self.stdout.write(
            f"\n{design.prompts} prompts, k in {list(k_values)}, {design.replicates} replicates, "
            f"{design.annotations_per_item} annotations per item, seed {design.seed}, "
            f"{round(opts['confidence'] * 100)}% two-way intervals (headline) and simultaneous bands (min); "
            f"{sum(c.judgments for c in checks)} judgments by {sum(c.annotators for c in checks)} simulated "
            f"annotators in {seconds:.0f} s on {platform.node()} ({platform.machine()}, {platform.python_version()})."
        )
        if not opts["keep"]:
            for check in checks:
                reproduction.discard_study(check.study)
        failed = [f"{c.population.name} (m={c.study.opponent_outputs})" for c in checks if not c.passed]
        if failed:
            raise CommandError(f"the theory is not covered for: {', '.join(failed)}", returncode=1)
        self.stdout.write(self.style.SUCCESS("Every interval covers the theory."))

    def _run(self, populations, design, opts, url: str, stamp: str) -> list:
        checks = []
        for population, m in populations:
            self.stdout.write(f"{population.name}, m = {m}: {design.items} items, up to "
                              f"{design.items * design.annotations_per_item} judgments to collect (items that show one "
                              "text need none)…")
            slug = f"reproduce-{population.name.replace('.', '')}-m{m}-{stamp}"
            try:
                check = reproduction.run_check(
                    population, dataclasses.replace(design, opponent_outputs=m), base_url=url, slug=slug,
                    luce_temperature=opts["luce_temperature"], concurrency=opts["concurrency"],
                    confidence=opts["confidence"],
                )
            except Exception as exc:
                raise CommandError(f"{population.name}: {exc}") from exc
            checks.append(check)
        return checks
