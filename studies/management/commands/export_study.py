"""Write one table of a study as CSV: `manage.py export_study <slug> --table judgments --output file.csv`."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.estimate import export
from studies.estimate.results import ORIGINS
from studies.models import Study


class Command(BaseCommand):
    help = "Export a study's judgments, items, candidates, prompts, summary or preference pairs as CSV (streamed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="The study's slug.")
        parser.add_argument("--table", choices=sorted(export.TABLES), default="judgments")
        parser.add_argument("--output", "-o", help="File to write; '-' or nothing writes to stdout.")
        parser.add_argument(
            "--source",
            dest="origin",
            choices=sorted(ORIGINS),
            help="Which annotators' judgments (default: all for judgments, real for the summary).",
        )
        parser.add_argument(
            "--include-unreviewed",
            action="store_true",
            help="Count the judgments of participants rejected in review or ended for failed attention checks "
            "in the summary (left out by default; the summary's unreviewed_included column records it).",
        )

    def handle(self, *args, slug: str, table: str, output: str | None, origin: str | None,
               include_unreviewed: bool = False, **options) -> None:
        try:
            study = Study.objects.get(slug=slug)
        except Study.DoesNotExist:
            raise CommandError(f"No study with slug {slug!r}.") from None
        chunks = export.iter_csv(study, table, origin=origin, include_unreviewed=include_unreviewed)
        if output in (None, "-"):
            for chunk in chunks:
                sys.stdout.write(chunk)
            sys.stdout.flush()
            return
        path = Path(str(output))
        partial = path.with_name(path.name + ".partial")
        with partial.open("w", encoding="utf-8", newline="") as handle:
            for chunk in chunks:
                handle.write(chunk)
        partial.replace(path)  # a crash never leaves a truncated file under the real name
        self.stderr.write(f"Wrote {table} of {slug} to {path}.")
