"""Run simulated annotators through a live study's participant flow, over HTTP."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from studies import services
from studies.models import Study
from studies.simulated_annotators import (
    SimulationError,
    annotators_to_fill,
    simulate_annotators,
)


class Command(BaseCommand):
    help = (
        "Send N synthetic participants through the real participant flow of a live study (join, consent, "
        "instructions, every task, completion) as HTTP requests to the running app. They choose by the "
        "study's own population, or by a population file, with optional Luce noise, and are marked "
        "simulated, so the results page can show them apart from real annotators."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="the study's slug")
        parser.add_argument("-n", "--annotators", type=int, default=None,
                            help="how many (default: enough to fill the study's remaining quota)")
        parser.add_argument("--population", type=Path, default=None,
                            help="a utilities CSV (type,candidate_id,utility[,weight]; candidate ids as in the "
                                 "candidates export) to choose by instead of the study's fitted population")
        parser.add_argument("--luce-temperature", type=float, default=None,
                            help="choose with probability ∝ exp(utility / T) instead of always the best")
        parser.add_argument("--seed", type=int, default=None, help="default: the study's seed")
        parser.add_argument("--concurrency", type=int, default=1, help="annotators working at once")
        parser.add_argument("--base-url", default="", help=f"the running app (default SITE_URL, {settings.SITE_URL})")
        parser.add_argument("--pilot", action="store_true",
                            help="run them on a new pilot copy of the study (same items, its own quota and "
                                 "judgments), leaving the study itself untouched")

    def handle(self, *args, slug: str, annotators: int | None, population: Path | None, luce_temperature: float | None,
               seed: int | None, concurrency: int, base_url: str, pilot: bool = False, **options) -> None:
        study = Study.objects.filter(slug=slug).first()
        if study is None:
            raise CommandError(f"no study with slug {slug!r}")
        if pilot:
            try:
                study = services.create_pilot(study=study)
            except services.PilotError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"Pilot copy {study.slug!r} of {slug!r}: {slug!r} itself is untouched.")
        population_csv = None
        if population is not None:
            try:
                population_csv = population.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"can't read {population}: {exc}") from exc
        n = annotators or annotators_to_fill(study)
        url = base_url or settings.SITE_URL
        self.stdout.write(f"{n} simulated annotators → {url}/s/{study.slug}/")
        try:
            report = simulate_annotators(
                study, annotators=n, base_url=url, population_csv=population_csv, luce_temperature=luce_temperature,
                seed=study.seed if seed is None else seed, concurrency=concurrency,
                on_progress=lambda done, total, message: self.stdout.write(f"  {message}") if options["verbosity"] > 1 else None,
            )
        except SimulationError as exc:
            raise CommandError(str(exc)) from exc
        summary = report.as_dict()
        statuses = ", ".join(f"{count} {status}" for status, count in sorted(summary["statuses"].items()))
        self.stdout.write(self.style.SUCCESS(
            f"{summary['annotators']} simulated annotators ({statuses}) made {summary['judgments']} judgments."
        ))
        for note in summary["notes"]:
            self.stdout.write(f"  note: {note}")
        self.stdout.write(f"Results: {url}/research/{study.slug}/results/?source=simulated")
