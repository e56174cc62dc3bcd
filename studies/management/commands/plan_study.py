"""Plan a study before paying for it: `manage.py plan_study SLUG --half-width 0.05 [--price 2.50]`."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from studies.estimate.plans import PlanningError, format_plan, plan_study
from studies.models import Study
from workers.stats import planning


def _half_width(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise CommandError(f"--half-width must be a number, got {value!r}") from None
    if not 0 < number <= 0.5:
        raise CommandError(f"--half-width must be in (0, 0.5], got {value}")
    return number


def _price(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise CommandError(f"--price must be a number, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise CommandError(f"--price must be a non-negative amount, got {value}")
    return number


class Command(BaseCommand):
    help = (
        "Print the expected interval half-widths of a study's current design and the prompts, participants, "
        "judgments and cost that reach a target half-width (docs/planning.md)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug", help="The study's slug.")
        parser.add_argument("--half-width", type=str, default="0.05", help="Target half-width (default 0.05).")
        parser.add_argument("--price", type=str, help="Price per participant, for the cost.")
        parser.add_argument("--pilot", help="Slug of a pilot study whose judgments give the variance components.")
        parser.add_argument("--defaults", action="store_true", help="Use the literature's variance components.")
        parser.add_argument("--target", choices=(*planning.TARGETS, *planning.TARGET_ALIASES), default="headline",
                            help="headline: the adversary cells, the headline f̂(k) (default); band: the "
                                 "conservative band, the min over every opponent (simultaneous; 30-70%% more "
                                 "prompts). cell and robust are their old names.")

    def handle(self, *args, slug: str, half_width: str, price: str | None, pilot: str | None, defaults: bool,
               target: str, **options) -> None:
        study = self._study(slug)
        if pilot and defaults:
            raise CommandError("Give --pilot or --defaults, not both.")
        try:
            result = plan_study(
                study, half_width=_half_width(half_width), price=None if price is None else _price(price),
                pilot=self._study(pilot) if pilot else None, defaults=defaults, target=target,
            )
        except PlanningError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(format_plan(result))

    @staticmethod
    def _study(slug: str) -> Study:
        try:
            return Study.objects.get(slug=slug)
        except Study.DoesNotExist:
            raise CommandError(f"No study with slug {slug!r}.") from None
