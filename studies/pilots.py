"""Pilot copies: try a prepared study on simulated annotators without spending its quota.

A pilot copy is a new Study row (`pilot_of` = the original) that owns copies of the original's
prompts, policies, populations, fits and comparison items, while its items' shown texts
(`ItemCandidate`) point at the original's very `Candidate` rows: the same texts, the same
provenance counts, the same predictions, but the pilot's own quota, participants and judgments.
Copying prompts and policies (not only items) keeps every per-prompt query of the steps, the
annotation services and the results confined to one study: `ComparisonItem`'s uniqueness and
`save_prompt_items` key items by prompt and policy, so items of two studies must not share them.

A pilot is created live, is joinable only by simulated annotators (the join page treats it as a
link that does not exist, and `judgment.flow.join_study` refuses people), and is deleted with
`delete_pilot` (judgments first: they protect the shown texts they chose).
"""

from __future__ import annotations

from django.db import transaction

from studies.models import (
    ComparisonItem,
    ItemCandidate,
    Judgment,
    Participant,
    Policy,
    PolicyFit,
    PopulationMatrix,
    Prompt,
    Study,
    StudyQuestion,
)

# The question's fields a pilot copies as they are (its policies are the pilot's copies; the record starts empty).
QUESTION_SETTINGS = ("kind", "k", "threshold", "margin", "half_width", "alpha", "on_answer", "price_per_participant")
# Study fields a pilot copies as they are (its own slug, title, status, secrets and code are new).
COPIED_FIELDS = (
    "instructions", "consent_text", "generator_id", "pool_size", "k_values", "opponent_outputs",
    "annotations_per_item", "items_per_participant", "replicates", "attention_check_rate",
    "max_attention_failures", "allow_cant_decide", "cant_decide_analysis", "comprehension_question",
    "comprehension_choices", "comprehension_answer", "assignment_timeout", "seed", "adversary", "screened_opponents",
)


class PilotError(Exception):
    """The study can't be piloted (no items yet, or it is a pilot itself)."""


def pilot_problems(study: Study) -> list[str]:
    if study.is_pilot:
        return ["This is a pilot copy already: pilot the original study."]
    if not study.items.filter(needs_judgment=True).exists():
        return ["The study has no comparison items to judge yet: press Prepare first."]
    return []


def _pilot_slug(study: Study) -> tuple[str, int]:
    number = Study.objects.filter(pilot_of=study).count() + 1
    while True:
        slug = f"{study.slug[:44]}-pilot-{number}"
        if not Study.objects.filter(slug=slug).exists():
            return slug, number
        number += 1


@transaction.atomic
def create_pilot(study: Study) -> Study:
    """A live pilot copy of `study` with the same items and its own (empty) quota and judgments."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    problems = pilot_problems(study)
    if problems:
        raise PilotError(" ".join(problems))
    slug, number = _pilot_slug(study)
    pilot = Study.objects.create(
        slug=slug, title=f"Pilot {number} of {study.title}"[:200], status=Study.Status.LIVE, pilot_of=study,
        **{name: getattr(study, name) for name in COPIED_FIELDS},
    )
    prompts = _copy_prompts(study, pilot)
    policies = _copy_policies(study, pilot)
    _copy_fits(study, prompts, policies)
    _copy_items(study, pilot, prompts, policies)
    copy_question(study, pilot, policies)
    return pilot


def copy_question(study: Study, pilot: Study, policies: dict[int, Policy]) -> None:
    """The original's pre-registered question, on `pilot`'s copies of its policies (original policy id →
    copy), not yet answered (issue #22): a pilot shows whether, and when, the question would be answered; a
    draft copy starts from it. `bulk_create`, not `save`: a pilot is created live, and a live study's
    question is frozen (it is fixed here, before any judgment)."""
    question = StudyQuestion.objects.filter(study=study).first()
    if question is None:
        return
    copy = StudyQuestion(study=pilot, **{name: getattr(question, name) for name in QUESTION_SETTINGS})
    copy.policy = policies[question.policy_id] if question.policy_id else None
    copy.other_policy = policies[question.other_policy_id] if question.other_policy_id else None
    StudyQuestion.objects.bulk_create([copy])


def _copy_prompts(study: Study, pilot: Study) -> dict[int, Prompt]:
    """Original prompt id → its copy in the pilot, with the population copied alongside."""
    copies: dict[int, Prompt] = {}
    for prompt in study.prompts.order_by("id"):
        copies[prompt.pk] = Prompt.objects.create(
            study=pilot, text=prompt.text, external_id=prompt.external_id, metadata=prompt.metadata
        )
    matrices = PopulationMatrix.objects.filter(prompt__study=study)
    PopulationMatrix.objects.bulk_create(
        PopulationMatrix(
            prompt=copies[m.prompt_id], candidate_ids=m.candidate_ids, utilities=m.utilities, weights=m.weights,
            type_labels=m.type_labels, metadata={**m.metadata, "copied_from_prompt": m.prompt_id},
        )
        for m in matrices
    )
    return copies


def _copy_policies(study: Study, pilot: Study) -> dict[int, Policy]:
    return {
        policy.pk: Policy.objects.create(study=pilot, name=policy.name, kind=policy.kind, params=policy.params,
                                         generator_id=policy.generator_id)
        for policy in study.policies.order_by("id")
    }


def _copy_fits(study: Study, prompts: dict[int, Prompt], policies: dict[int, Policy]) -> None:
    fits = PolicyFit.objects.filter(policy__study=study)
    copied = []
    for fit in fits:
        fit.pk = None
        fit.policy, fit.prompt = policies[fit.policy_id], prompts[fit.prompt_id]
        copied.append(fit)
    PolicyFit.objects.bulk_create(copied)


def _copy_items(study: Study, pilot: Study, prompts: dict[int, Prompt], policies: dict[int, Policy]) -> None:
    """Every item and attention check, with its shown texts pointing at the original's candidates."""
    originals = list(ComparisonItem.objects.filter(study=study).order_by("id"))
    copies = []
    for item in originals:
        copies.append(ComparisonItem(
            study=pilot, prompt=prompts[item.prompt_id],
            policy=policies[item.policy_id] if item.policy_id else None,
            opponent_policy=policies[item.opponent_policy_id] if item.opponent_policy_id else None,
            k=item.k, opponent_label=item.opponent_label, m=item.m, replicate=item.replicate,
            is_attention_check=item.is_attention_check, needs_judgment=item.needs_judgment,
            predicted_win_rate=item.predicted_win_rate, draw=item.draw, share=item.share,
        ))  # the counters (#14) start at their defaults: no live assignments, a fresh `spread` each
    ComparisonItem.objects.bulk_create(copies)  # PostgreSQL returns the new ids
    new_id = {old.pk: new.pk for old, new in zip(originals, copies, strict=True)}
    ItemCandidate.objects.bulk_create(
        ItemCandidate(item_id=new_id[s.item_id], candidate_id=s.candidate_id, slot=s.slot,
                      count_policy=s.count_policy, count_opponent=s.count_opponent)
        for s in ItemCandidate.objects.filter(item__study=study).order_by("id")
    )


@transaction.atomic
def delete_pilot(pilot: Study) -> None:
    """Delete a pilot copy and everything in it; the original study is not touched."""
    pilot = Study.objects.select_for_update().get(pk=pilot.pk)
    if not pilot.is_pilot:
        raise PilotError("Only a pilot copy can be deleted this way.")
    # Judgments protect the shown texts they chose, and shown texts protect the original's candidates.
    Judgment.objects.filter(assignment__participant__study=pilot).delete()
    Participant.objects.filter(study=pilot).delete()
    ComparisonItem.objects.filter(study=pilot).delete()
    pilot.delete()
