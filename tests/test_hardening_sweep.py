"""Issue #24 finding 5: one study's timeout can't stop the sweep of the others.

The assignment timeout is bounded at the model, the admin's form and the database (1 minute to
7 days, docs/security.md); and the sweep handles each live study on its own, logging a study that
fails instead of stopping, so an idle participant of a healthy study is still timed out.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from studies.models import Assignment, Participant, Study
from studies.tasks import sweep_abandoned
from tests.factories import (
    abandoned_participant,
    admin_study_form,
    make_live_study,
    make_study,
)

pytestmark = pytest.mark.django_db

HOSTILE = [timedelta(days=999_999_999), timedelta(0), timedelta(days=-1), timedelta(seconds=59), timedelta(days=8)]


@pytest.mark.parametrize("timeout", HOSTILE)
def test_the_model_refuses_an_unbounded_assignment_timeout(timeout):
    study = make_study()
    study.assignment_timeout = timeout
    with pytest.raises(ValidationError) as refused:
        study.full_clean()
    assert "assignment_timeout" in refused.value.message_dict


@pytest.mark.parametrize("value", ["999999999 00:00:00", "0", "-1 00:00:00", "00:00:30"])
def test_the_admin_form_refuses_an_unbounded_assignment_timeout(rf, researcher, value):
    form = admin_study_form(rf, researcher, make_study(), assignment_timeout=value)
    assert not form.is_valid()
    assert "assignment_timeout" in form.errors


@pytest.mark.parametrize("timeout", [timedelta(minutes=1), timedelta(minutes=30), timedelta(days=7)])
def test_the_bounds_themselves_are_accepted(timeout):
    study = make_study()
    study.assignment_timeout = timeout
    study.full_clean()


@pytest.mark.parametrize("timeout", [timedelta(days=999_999_999), timedelta(0), timedelta(days=-1)])
def test_the_database_refuses_an_unbounded_assignment_timeout(timeout):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_study(assignment_timeout=timeout)


def _legacy_broken_study() -> Study:
    """A live study saved before the bounds existed, with the probe's 999,999,999 days: the
    constraint is dropped inside this test's transaction (rolled back after it) to store it."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {Study._meta.db_table} DROP CONSTRAINT IF EXISTS study_timeout_bounded")
    return make_live_study(assignment_timeout=timedelta(days=999_999_999))


def test_a_failing_study_is_logged_and_the_others_are_still_swept(caplog):
    broken = _legacy_broken_study()  # first in the sweep's order
    broken_participant, _ = abandoned_participant(broken)
    healthy = make_live_study(assignment_timeout=timedelta(minutes=30))
    gone, task = abandoned_participant(healthy)

    with caplog.at_level(logging.ERROR, logger="studies.tasks"):
        summary = sweep_abandoned()

    assert Participant.objects.get(pk=gone.pk).status == Participant.Status.TIMED_OUT
    assert Assignment.objects.get(pk=task.pk).status == Assignment.Status.RELEASED
    assert Participant.objects.get(pk=broken_participant.pk).status == Participant.Status.ACTIVE
    assert summary["failed"] == 1
    assert summary["timed_out"] == 1
    assert any(broken.slug in record.getMessage() for record in caplog.records)
