"""The adaptive allocation in the product (issue #22): the periodic job writes item priorities and a
record of what it decided, the claim hands out the highest priority first, a recorded run replays,
and studies without allocation are left alone. On PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from studies import allocation, tasks
from studies.judgment.assign import assign_next_item
from studies.models import AllocationRun, ComparisonItem, Judgment, Study, StudyQuestion
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)
from tests.judgments import make_judgment
from workers.stats import allocation as rule

pytestmark = pytest.mark.django_db

SURE, UNSURE = "sure", "unsure"


def judged_study(*, allocation_on: bool = True, status: str = Study.Status.LIVE) -> Study:
    """Policy "sure": 30 prompts, 5 judgments each, every one for the policy (its interval is narrow);
    policy "unsure": 5 prompts, 6 judgments each, split (too few prompts to say anything: early).
    The unsure items have more live assignments than the sure ones, so without priorities a claim
    takes a sure item first. Judgments were made a minute ago (the job reads them after they settle)."""
    study = make_study(status=status, k_values=[2], annotations_per_item=10, items_per_participant=40,
                       attention_check_rate=0, adaptive_allocation=allocation_on, allocation_half_width=0.2)
    people = [make_participant(study=study) for _ in range(6)]
    for name, prompts, per_item in ((SURE, 30, 5), (UNSURE, 5, 6)):
        policy = make_policy(study=study, name=name)
        for i in range(prompts):
            item = make_item(study=study, prompt=make_prompt(study=study), policy=policy,
                             texts=[f"{name} own {i}", f"{name} other {i}"], counts=[(2, 0), (0, 1)])
            for j, person in enumerate(people[:per_item]):
                make_judgment(item=item, participant=person, pick=0 if name == SURE else j % 2)
            ComparisonItem.objects.filter(pk=item.pk).update(live_assignments=per_item)
    Judgment.objects.filter(assignment__item__study=study).update(created_at=timezone.now() - timedelta(minutes=1))
    return study


def priorities(study: Study) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for name, priority in ComparisonItem.objects.filter(study=study).values_list("policy__name", "priority"):
        out.setdefault(name, set()).add(priority)
    return out


def test_the_job_writes_priorities_and_records_the_run():
    study = judged_study()
    assert tasks.allocate_judgments() == {"studies": 1, "failed": 0}
    assert priorities(study) == {SURE: {0}, UNSURE: {2}}
    run = AllocationRun.objects.get(study=study)
    assert run.rule_version == rule.RULE_VERSION
    assert run.judgments_seen == 30 * 5 + 5 * 6
    assert run.last_judgment_id == Judgment.objects.filter(assignment__item__study=study).latest("id").pk
    assert run.items_updated == 5  # only the unsure items changed
    cells = {cell["policy"]: cell for cell in run.cells}
    assert cells[SURE]["state"] == "narrow"
    assert cells[SURE]["n_prompts"] == 30
    assert cells[SURE]["estimate"] == 1.0
    assert cells[SURE]["high"] - cells[SURE]["low"] <= 2 * 0.2
    assert cells[UNSURE]["state"] == "early"
    assert cells[UNSURE]["priority"] == 2
    assert cells[UNSURE]["n_prompts"] == 5
    assert run.parameters["half_width"] == 0.2
    assert run.parameters["planned_units"] == 35
    assert run.parameters["questions"] is None  # cells_of_interest: every cell


def test_a_claim_takes_the_highest_priority_open_item_first():
    study = judged_study()
    newcomer = make_participant(study=study, status="active", consent_at=timezone.now())
    first = assign_next_item(participant=newcomer)
    assert first is not None
    assert first.item.policy.name == SURE
    allocation.allocate_study(study)
    later = make_participant(study=study, status="active", consent_at=timezone.now())
    claimed = assign_next_item(participant=later)
    assert claimed is not None
    assert claimed.item.policy.name == UNSURE
    assert claimed.item.priority == 2


def test_a_recorded_run_replays_from_the_judgments_of_its_time():
    study = judged_study()
    run = allocation.allocate_study(study)
    replayed = allocation.replay(run)
    assert replayed.matches, replayed.differences
    assert replayed.cells == run.cells
    # Judgments made after the run do not enter its replay ...
    unsure_item = ComparisonItem.objects.filter(study=study, policy__name=UNSURE).first()
    make_judgment(item=unsure_item, participant=make_participant(study=study), pick=1)
    assert allocation.replay(run).matches
    # ... and a record that says something else, or judgments gone since, are reported.
    AllocationRun.objects.filter(pk=run.pk).update(cells=[{**c, "priority": 1} for c in run.cells])
    tampered = allocation.replay(AllocationRun.objects.get(pk=run.pk))
    assert not tampered.matches
    assert any("priority 0 ≠ 1" in d or "priority 2 ≠ 1" in d for d in tampered.differences)
    Judgment.objects.filter(pk=run.last_judgment_id).delete()
    gone = allocation.replay(run)
    assert not gone.same_judgments
    assert not gone.matches


def test_a_participant_left_out_later_does_not_change_the_replay():
    study = judged_study()
    run = allocation.allocate_study(study)
    person = study.participants.order_by("id").first()
    person.review_status = person.Review.REJECTED
    person.save(update_fields=["review_status"])
    assert allocation.replay(run).matches  # the run recorded whom it left out: nobody then
    later = allocation.allocate_study(study, now=timezone.now() + timedelta(seconds=1))
    assert later.left_out_participants == [person.pk]
    assert later.judgments_seen < run.judgments_seen
    assert allocation.replay(later).matches


def test_studies_with_allocation_off_or_not_live_are_untouched():
    off = judged_study(allocation_on=False)
    paused = judged_study(status=Study.Status.PAUSED)
    assert tasks.allocate_judgments() == {"studies": 0, "failed": 0}
    for study in (off, paused):
        assert priorities(study) == {SURE: {0}, UNSURE: {0}}
        assert not AllocationRun.objects.filter(study=study).exists()


def test_turning_allocation_off_gives_the_items_priority_0_again():
    study = judged_study()
    tasks.allocate_judgments()
    assert priorities(study) == {SURE: {0}, UNSURE: {2}}
    Study.objects.filter(pk=study.pk).update(adaptive_allocation=False)
    assert tasks.allocate_judgments() == {"studies": 0, "failed": 0}
    assert priorities(study) == {SURE: {0}, UNSURE: {0}}
    assert AllocationRun.objects.filter(study=study).count() == 1  # the off study gets no new run


def test_a_failing_study_does_not_stop_the_others(monkeypatch):
    good, bad = judged_study(), judged_study()
    real = allocation.allocate_study

    def flaky(study, **kwargs):
        if study.pk == bad.pk:
            raise RuntimeError("boom")
        return real(study, **kwargs)

    monkeypatch.setattr(allocation, "allocate_study", flaky)
    assert tasks.allocate_judgments() == {"studies": 1, "failed": 1}
    assert priorities(good) == {SURE: {0}, UNSURE: {2}}


def test_the_half_width_is_validated_at_the_edge():
    from django.core.exceptions import ValidationError

    field = Study._meta.get_field("allocation_half_width")
    for bad in (0.0, -0.1, 0.6):
        with pytest.raises(ValidationError):
            field.run_validators(bad)
    field.run_validators(0.05)


def test_the_admin_shows_a_run_and_its_replay_to_researchers_only(researcher_client, client, outsider):
    from django.urls import reverse

    study = judged_study()
    run = allocation.allocate_study(study)
    url = reverse("admin:studies_allocationrun_change", args=[run.pk])
    page = researcher_client.get(url)
    assert page.status_code == 200
    assert b"Matches: the judgments of its time" in page.content
    assert b"early" in page.content
    assert b"narrow" in page.content
    assert researcher_client.get(reverse("admin:studies_allocationrun_changelist")).status_code == 200
    client.force_login(outsider)
    assert client.get(url).status_code == 302  # not staff: to the login page


def test_priorities_are_one_update_and_the_claim_costs_the_same_with_them():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    study = judged_study()

    def claim_statements() -> int:
        person = make_participant(study=study, status="active", consent_at=timezone.now())
        with CaptureQueriesContext(connection) as queries:
            assert assign_next_item(participant=person) is not None
        return len(queries)

    before = claim_statements()
    with CaptureQueriesContext(connection) as queries:
        allocation.allocate_study(study)
    updates = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(("UPDATE", "WITH"))]
    if connection.vendor == "postgresql":  # SQLite (the demo) takes one ORM update per cell
        assert len(updates) == 1  # every cell's priority in one statement
    assert claim_statements() == before


def test_the_question_hook_names_the_cells_and_the_run_replays_with_what_it_recorded(monkeypatch):
    study = judged_study()
    sure = allocation.CellKey(SURE, 2, ComparisonItem.ADVERSARY, 1)
    # Only the sure cell is asked, "is f ≥ 0.5?" (its interval lies above: answered); the unsure cell is not read.
    monkeypatch.setattr(allocation, "cells_of_interest", lambda s: {sure: allocation.Question(0.5, 0.05)})
    run = allocation.allocate_study(study)
    cells = {cell["policy"]: cell for cell in run.cells}
    assert cells[SURE]["state"] == "answered"
    assert cells[UNSURE]["state"] == "not asked"
    assert priorities(study) == {SURE: {0}, UNSURE: {0}}
    assert run.parameters["questions"] == [[SURE, 2, ComparisonItem.ADVERSARY, 1, 0.5, 0.05]]
    assert run.parameters["half_width"] is None  # the question says when a cell is done
    monkeypatch.setattr(allocation, "cells_of_interest", lambda s: None)
    assert allocation.replay(run).matches  # the recorded question, not today's


def _ask(study: Study, **fields) -> None:
    # Saved as the admin saves it before going live (the model refuses edits once live).
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DRAFT)
    StudyQuestion.objects.create(study=study, **fields)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.LIVE)
    study.refresh_from_db()


def test_a_threshold_question_is_the_only_cell_read():
    study = judged_study()
    _ask(study, kind="threshold", policy=study.policies.get(name=UNSURE), k=2, threshold=0.7, margin=0.02)
    run = allocation.allocate_study(study)
    assert run.parameters["questions"] == [[UNSURE, 2, ComparisonItem.ADVERSARY, 1, 0.7, 0.02]]
    cells = {cell["policy"]: cell for cell in run.cells}
    assert cells[SURE]["state"] == "not asked"
    assert cells[UNSURE]["state"] == "early"
    assert priorities(study) == {SURE: {0}, UNSURE: {2}}
    assert allocation.replay(run).matches


def test_a_difference_question_gives_both_cells_one_priority_until_answered():
    study = judged_study()
    _ask(study, kind="difference", policy=study.policies.get(name=SURE), other_policy=study.policies.get(name=UNSURE),
         k=2)  # fmt: skip
    run = allocation.allocate_study(study)
    asked = {(q[0], q[4]) for q in run.parameters["questions"]}
    assert asked == {(SURE, None), (UNSURE, None)}
    # No threshold of their own: neither cell is "narrow" or "answered" alone, so the sure cell, narrow
    # as it is, keeps being judged beside the unsure one and their prompts stay paired.
    cells = {cell["policy"]: cell for cell in run.cells}
    assert cells[SURE]["state"] not in ("narrow", "answered", "not asked")
    assert cells[SURE]["priority"] > 0
    StudyQuestion.objects.filter(study=study).update(answer=StudyQuestion.Answer.YES)
    assert allocation.cells_of_interest(study) is None  # answered: back to every cell


def test_a_precision_question_sets_the_half_width():
    study = judged_study()
    _ask(study, kind="precision", half_width=0.01)
    run = allocation.allocate_study(study)
    assert run.parameters["questions"] is None
    assert run.parameters["half_width"] == 0.01
    cells = {cell["policy"]: cell for cell in run.cells}
    assert cells[SURE]["state"] != "narrow"  # ±0.2 was narrow enough; ±0.01 is not
