"""Import candidate pools generated outside ualign into a draft study (bring your own candidates)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.candidate_import import FORMAT_HELP, import_candidates
from studies.models import Study


class Command(BaseCommand):
    help = "Import prompts' candidate pools from a .jsonl or .csv file; nothing is saved when any row is bad. " + FORMAT_HELP

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="the study's slug (a draft study without a generator)")
        parser.add_argument("file", type=Path, help="a .jsonl or .csv file")

    def handle(self, *args, slug: str, file: Path, **options) -> None:
        study = Study.objects.filter(slug=slug).first()
        if study is None:
            raise CommandError(f"no study with slug {slug!r}")
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CommandError(f"can't read {file}: {exc}") from exc
        report = import_candidates(study=study, filename=file.name, data=data)
        if not report.ok:
            lines = "\n".join(f"  {error}" for error in report.errors)
            raise CommandError(f"nothing was imported: {len(report.errors)} problem(s)\n{lines}")
        self.stdout.write(self.style.SUCCESS(
            f"Imported {report.candidates} candidates for {report.prompts_created} new and "
            f"{report.prompts_matched} existing prompts into {study.slug!r}."
        ))
