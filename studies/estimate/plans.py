"""A study's plan: its design and data from the database → `workers.stats.planning` → figures to show.

What the planner needs from a study (docs/planning.md):
- the design: prompts, policies (each meets the adversary and every other policy, as
  `studies/steps/items.py` builds items), k values, m, replicates, annotations per item, items per
  participant and the attention-check rate;
- the cell means: once the study is prepared, the population model's predicted win rate of each
  (policy, k, opponent), averaged over its items; before that ½ everywhere, where a pick
  varies most (the conservative choice);
- the variance components: estimated from a pilot study's judgments when one is named, else
  from this study's own judgments once it has `MIN_JUDGMENTS` of them (a pilot run on it, real
  or simulated), else the literature's defaults (`planning.literature_components`). An
  estimated share resting on too few judgment pairs falls back to the default.

Used by `manage.py plan_study` and the admin's "Plan" page (`studies/estimate/planning_views.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.db.models import Avg, Count

from studies.estimate.results import judgments_for
from studies.models import ComparisonItem, Study
from workers.stats import planning, planning_screen
from workers.stats.study_design import ADVERSARY, CellKey, Design, attention_check_share

MIN_JUDGMENTS = 30
#: How the page and the command name each target (`planning.TARGETS`).
TARGET_TEXT = {
    "headline": "adversary cell (the headline f̂(k), as the results page plots it)",
    "band": "conservative band (the min over every opponent, simultaneous band)",
}


class PlanningError(Exception):
    """The study can't be planned as it stands (no policies, a pilot without judgments)."""


@dataclass(frozen=True)
class StudyPlan:
    study: Study
    prompts_now: int  # the study's prompts today (the current design uses at least 1)
    plan: planning.SampleSizePlan
    components: planning.VarianceComponents
    means_source: str
    # With the annotators' adversary: both stages and the headline's plan (`planning_screen`); the
    # `plan` above then sizes the model's adversary cells, which stay beside the headline.
    screened: planning_screen.ScreenedPlan | None = None

    @property
    def current(self) -> planning.DesignWidths:
        return self.plan.current

    def rows(self, widths: planning.DesignWidths) -> list[dict]:
        """Per policy and k: the f̂(k) band's and the adversary cell's predicted half-widths."""
        cells = {(c.cell.policy, c.cell.k): c for c in widths.cells if c.cell.opponent == ADVERSARY}
        return [
            {"policy": r.policy, "k": r.k, "band": r.half_width, "cell": cells[(r.policy, r.k)].half_width,
             "mean": cells[(r.policy, r.k)].mean}
            for r in widths.robust
        ]


def study_design(study: Study, *, prompts: int | None = None) -> Design:
    """The planner's view of a study (`prompts` overrides the count, at least 1)."""
    policies = tuple(study.policies.order_by("id").values_list("name", flat=True))
    if not policies:
        raise PlanningError("The study has no policies yet: add the policies to compare, then plan.")
    if not study.k_values:
        raise PlanningError("The study has no k values yet.")
    count = study.prompts.count() if prompts is None else prompts
    design = Design(
        prompts=max(count, 1),
        k_values=tuple(study.k_values),
        policies=policies,
        annotations_per_item=study.annotations_per_item,
        items_per_participant=study.items_per_participant,
        m=study.opponent_outputs,
        replicates=study.replicates,
        attention_check_rate=attention_check_share(float(study.attention_check_rate)),
    )
    if study.adversary != Study.Adversary.ANNOTATORS:
        return design
    problems = study.screening_problems()
    if problems:
        raise PlanningError(" ".join(problems))
    return planning_screen.screened_design(design, study.screened_opponents)


@dataclass(frozen=True)
class DesignFit:
    """What the design asks of its places: judgments, participants, and whether the places give them.

    judgments: what the study's items need, attention checks included and items decided by
    construction left out (nobody judges them); counted from the comparison items once they
    exist, from the design (`Design.judgments`, every item judged) before Prepare.
    participants: the people that takes at the study's items per participant.
    places: the study's cap on participants (`max_participants`), None when it has none.
    """

    judgments: int
    participants: int
    items_per_participant: int
    places: int | None
    counted_from: str

    @property
    def fits(self) -> bool:
        return self.places is not None and self.places >= self.participants

    @property
    def sentence(self) -> str:
        """The fit in one sentence, saying what to change when it doesn't fit."""
        need = (f"The design needs {self.judgments:,} judgments ({self.participants:,} participants at "
                f"{self.items_per_participant} items each, counted from {self.counted_from})")
        if self.places is None:
            return (f"{need}; no places are set, so nothing caps who joins or what it costs: "
                    f"set the places (max participants) to {self.participants:,}.")
        given = self.places * self.items_per_participant
        if self.fits:
            return f"{need}; its {self.places:,} places give {given:,}: the design fits."
        per_person = math.ceil(self.judgments / self.places) if self.places else self.judgments
        return (f"{need}, but its {self.places:,} places give only {given:,} ({given / self.judgments:.0%}): "
                f"set the places to {self.participants:,}, or the items per participant to {per_person:,}, "
                "or ask for fewer judgments (fewer prompts, k values or annotations per item).")


def design_fit(study: Study) -> DesignFit | None:
    """The study's needs against its places (`DesignFit`), or None when it has no design yet."""
    items = ComparisonItem.objects.filter(study=study, needs_judgment=True).count()
    if items:
        judgments, counted_from = items * study.annotations_per_item, "its comparison items"
    else:
        try:
            judgments = study_design(study).judgments
        except (PlanningError, ValueError):
            return None
        counted_from = "its design, before Prepare"
    participants = max(study.annotations_per_item, math.ceil(judgments / study.items_per_participant))
    return DesignFit(judgments, participants, study.items_per_participant, study.max_participants, counted_from)


def predicted_cell_means(study: Study) -> tuple[dict[CellKey | tuple, float | None], str]:
    """The population model's mean predicted credit per (policy, k, opponent), and a description."""
    rows = (
        ComparisonItem.objects.filter(study=study, is_attention_check=False, predicted_win_rate__isnull=False)
        .values_list("policy__name", "k", "opponent_label")
        .annotate(mean=Avg("predicted_win_rate"), n=Count("id"))
        .order_by()
    )
    means: dict[CellKey | tuple, float | None] = {(policy, k, opponent): mean for policy, k, opponent, mean, _ in rows}
    if not means:
        return {}, "½ in every cell (no items yet: the most a pick can vary)"
    n_items = sum(n for *_, n in rows)
    return means, f"the population model's predicted win rates ({n_items} items)"


def judgment_components(study: Study) -> planning.VarianceComponents | None:
    """Components estimated from a study's judgments (real and simulated), or None if too few."""
    rows = list(
        judgments_for(study, "all")
        .filter(assignment__item__is_attention_check=False, cant_decide=False)
        .values_list("chosen__count_policy", "chosen__count_opponent", "assignment__item__prompt_id",
                     "assignment__participant_id", "assignment__item__policy_id", "assignment__item__k",
                     "assignment__item__opponent_label", "assignment__item_id")
    )
    if len(rows) < MIN_JUDGMENTS:
        return None
    credit = [c_a / (c_a + c_b) for c_a, c_b, *_ in rows]
    cells = [f"{policy}|{k}|{opponent}" for *_, policy, k, opponent, _item in rows]
    est = planning.estimate_components(
        credit, [r[2] for r in rows], [r[3] for r in rows], cell_ids=cells, item_ids=[r[7] for r in rows],
        fallback=planning.literature_components(),
    )
    return planning.VarianceComponents(
        prompt=est.prompt, item=est.item, annotator=est.annotator, dispersion=est.dispersion,
        source=f"estimated from {est.n_judgments} judgments of “{study.title}” ({study.slug})",
        n_judgments=est.n_judgments, pairs=est.pairs, notes=est.notes,
    )


def study_components(study: Study, *, pilot: Study | None = None, defaults: bool = False) -> planning.VarianceComponents:
    if defaults:
        return planning.literature_components()
    if pilot is not None:
        components = judgment_components(pilot)
        if components is None:
            raise PlanningError(f"The pilot “{pilot.slug}” has fewer than {MIN_JUDGMENTS} judgments to learn from.")
        return components
    return judgment_components(study) or planning.literature_components()


def plan_study(
    study: Study,
    *,
    half_width: float,
    price: float | None = None,
    pilot: Study | None = None,
    defaults: bool = False,
    target: str = "headline",
    confidence: float = 0.95,
) -> StudyPlan:
    """The current design's expected widths and the design that reaches ±half_width.

    target: "headline" (default) sizes the study for the headline, each policy's adversary cell
    at each k; "band" for the conservative band (the simultaneous band of the min over every
    opponent), which needs 30-70% more prompts (`planning.TARGETS`; "cell"/"robust" still work).
    """
    prompts_now = study.prompts.count()
    design = study_design(study, prompts=prompts_now)
    components = study_components(study, pilot=pilot, defaults=defaults)
    means, means_source = predicted_cell_means(study)
    plan = planning.plan_sample_size(
        design, components, half_width=half_width, target=target, cell_means=means, confidence=confidence,
        price=price,
    )
    screened = None
    if study.adversary == Study.Adversary.ANNOTATORS:
        screened = planning_screen.plan_screened(design, components, n_opponents=study.screened_opponents,
                                                 half_width=half_width, cell_means=means, confidence=confidence)
    return StudyPlan(study, prompts_now, plan, components, means_source, screened)


def format_half_width(value: float) -> str:
    """±0.049, or what the interval amounts to when it can't be narrower than [0, 1]."""
    if value == float("inf"):
        return "no interval (fewer than 2 prompts or annotators)"
    return "the whole [0, 1]" if value >= 0.5 else f"±{value:.3f}"


_pm = format_half_width


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def format_plan(sp: StudyPlan) -> str:
    """The plan as the command prints it."""
    plan, design, comp = sp.plan, sp.current.design, sp.components
    cells = len(design.cells)
    lines = [
        f"Plan for “{sp.study.title}” ({sp.study.slug}), status {sp.study.status}",
        f"Design: {sp.prompts_now} prompts, {len(design.policies)} policies × k ∈ {{{', '.join(map(str, design.k_values))}}}"
        f" × {cells // (len(design.policies) * len(design.k_values))} opponents = {cells} cells, "
        f"{design.replicates} item(s) per cell and prompt, {design.annotations_per_item} annotations per item, "
        f"{design.items_per_participant} items per participant, attention checks {design.attention_check_rate:.0%}",
        f"Variance components: {comp.source}: prompt {comp.prompt:.3f}, item {comp.item:.3f}, "
        f"annotator {comp.annotator:.3f}, residual {comp.residual:.3f}, dispersion {comp.dispersion:.3f}",
        *(f"  note: {note}" for note in comp.notes),
        f"Cell means: {sp.means_source}",
        "",
        f"Current design: {design.judgments:,} judgments, {design.participants:,} participants"
        + (f", cost {_money(plan.current_cost)}" if plan.price is not None else ""),
        f"  {'policy':<20} {'k':>3} {'mean':>6} {'headline cell':>17} {'conservative band':>17}",
        *(f"  {r['policy']:<20} {r['k']:>3} {r['mean']:>6.3f} {_pm(r['cell']):>17} {_pm(r['band']):>17}"
          for r in sp.rows(sp.current)),
        "",
        f"Target: {_pm(plan.target_half_width)} for every "
        + (TARGET_TEXT["band"] if plan.target == "band" else TARGET_TEXT["headline"] if sp.screened is None
           else "model's adversary cell (beside the annotators' adversary, the headline: below)")
        + f" at {sp.current.confidence:.0%}",
    ]
    if plan.recommended is None:
        lines.append(f"  not reachable with up to {planning.MAX_PROMPTS:,} prompts")
    else:
        best = plan.recommended.design
        lines.append(
            f"  Recommended: {best.prompts:,} prompts at {best.annotations_per_item} annotations per item: "
            f"{best.judgments:,} judgments, {best.participants:,} participants"
            + (f", cost {_money(plan.recommended_cost)}" if plan.price is not None else "")
        )
    if plan.prompts_floor is not None:
        lines.append(f"  With fewer than {plan.prompts_floor:,} prompts no number of annotators per item reaches it.")
    priced = plan.price is not None
    lines += ["  Alternatives (cheapest first):",
              f"  {'annotations/item':>16} {'prompts':>8} {'participants':>13} {'judgments':>10}"
              + (f" {'cost':>12}" if priced else "")]
    lines += [f"  {a.annotations_per_item:>16} {a.prompts:>8,} {a.participants:>13,} {a.judgments:>10,}"
              + (f" {_money(a.cost):>12}" if priced else "") for a in plan.alternatives]
    if priced:
        lines.append("Cost = participants × the price per participant (platform fees not included).")
    if sp.screened is not None:
        lines += ["", *screened_lines(sp.screened)]
    return "\n".join(lines)


def screened_lines(plan: planning_screen.ScreenedPlan) -> list[str]:
    """The annotators' adversary's two stages and its headline, as the command prints them."""
    now = plan.current

    def stages(s: planning_screen.ScreenedStages) -> str:
        return (f"{s.design.prompts:,} prompts × {s.design.replicates} items per screened opponent: "
                f"{s.screening_judgments:,} screening + {s.confirmation_judgments:,} confirmation judgments")

    lines = [
        f"The headline is the annotators' adversary: {now.n_opponents} screened opponents per prompt, policy and k, "
        f"each {now.screening_items} screening + {now.confirmation_items} confirmation item(s)",
        f"  Current design, {stages(now)}",
        f"  {'policy':<20} {'k':>3} {'headline (tied)':>17} {'if separated':>14}",
        *(f"  {w.policy:<20} {w.k:>3} {_pm(w.half_width_tied):>17} {_pm(w.half_width_separated):>14}"
          for w in now.widths),
        f"  Target {_pm(plan.target_half_width)} for every annotators' adversary headline (planned as if the screened "
        "opponents tied, the widest case): "
        + (f"{stages(plan.recommended)}" if plan.recommended else "not reachable"),
        "  More prompts narrow both ends, but the gap between them (the minimum's loser's curse) shrinks only with "
        "more judgments per prompt and opponent. Other ways there:",
        *(f"    {stages(alt)}" for alt in plan.alternatives[1:]),
    ]
    return lines
