from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from studies.models import Assignment, Candidate, Job, Judgment, Study
from tests.factories import (
    make_candidate,
    make_generator,
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db


def test_database_rejects_a_duplicate_candidate_index():
    prompt = make_prompt(study=make_study())
    generator = make_generator()
    make_candidate(prompt=prompt, generator=generator, sample_index=0, text="first")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_candidate(prompt=prompt, generator=generator, sample_index=0, text="another text")
    assert Candidate.objects.filter(prompt=prompt).count() == 1


def test_database_rejects_the_same_text_twice_in_one_pool():
    prompt = make_prompt(study=make_study())
    generator = make_generator()
    make_candidate(prompt=prompt, generator=generator, sample_index=0, text="same")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_candidate(prompt=prompt, generator=generator, sample_index=1, text="same")


def test_same_index_is_fine_for_another_generator():
    prompt = make_prompt(study=make_study())
    make_candidate(prompt=prompt, generator=make_generator(), sample_index=0)
    make_candidate(prompt=prompt, generator=make_generator(), sample_index=0)
    assert prompt.candidates.count() == 2


def _assignment():
    study = make_study()
    prompt = make_prompt(study=study)
    item = make_item(study=study, prompt=prompt, policy=make_policy(study=study), texts=["a", "b"], counts=[(2, 0), (0, 1)])
    return Assignment.objects.create(participant=make_participant(study=study), item=item), item


def test_database_rejects_a_second_judgment_for_one_assignment():
    assignment, item = _assignment()
    shown = item.shown.first()
    Judgment.objects.create(assignment=assignment, chosen=shown, chosen_slot=1, credit=shown.credit)
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.create(assignment=assignment, chosen=shown, chosen_slot=1, credit=shown.credit)
    assert Judgment.objects.filter(assignment=assignment).count() == 1


def test_database_rejects_a_judgment_that_both_picks_and_cannot_decide():
    assignment, item = _assignment()
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.create(assignment=assignment, chosen=item.shown.first(), cant_decide=True)


def test_database_rejects_a_credit_outside_zero_to_one():
    assignment, item = _assignment()
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.create(assignment=assignment, chosen=item.shown.first(), credit=1.5)


def test_database_rejects_an_item_assigned_twice_to_one_participant():
    assignment, item = _assignment()
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(participant=assignment.participant, item=item)


def test_database_rejects_an_attention_rate_above_one():
    with pytest.raises(IntegrityError), transaction.atomic():
        make_study(attention_check_rate=1.5)


def test_credit_is_the_policy_share_of_the_chosen_text():
    study = make_study()
    item = make_item(study=study, prompt=make_prompt(study=study), policy=make_policy(study=study),
                     texts=["shared", "theirs"], counts=[(1, 1), (0, 1)], k=1, m=2)
    shared, theirs = item.shown.order_by("slot")
    assert shared.credit == 0.5
    assert theirs.credit == 0.0


def test_k_values_must_be_distinct_small_positive_integers():
    study = Study(slug="s", title="t", consent_text="c", k_values=[1, 1])
    with pytest.raises(ValidationError):
        study.full_clean()
    study.k_values = [0, 2]
    with pytest.raises(ValidationError):
        study.full_clean()
    study.k_values = [1, 2, 4]
    study.full_clean()


def test_study_status_moves_only_along_allowed_transitions():
    study = make_study()
    with pytest.raises(ValidationError):
        study.move_to(Study.Status.LIVE)
    study.move_to(Study.Status.PREPARING)
    study.refresh_from_db()
    assert study.status == Study.Status.PREPARING


def test_job_claim_succeeds_once():
    job = Job.objects.create(kind=Job.Kind.PING)
    assert Job.objects.claim(job.pk) is not None
    assert Job.objects.claim(job.pk) is None
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert job.attempts == 1
