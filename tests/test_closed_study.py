"""Closed means closed (issue #24, finding 4): no judgment is saved into a study that is not live,
or paused with the task still open (docs/architecture.md, Lifecycle). The rule is in the pick's
service (`judgment.rules.takes_pick`, checked by `judgment.picking.record_judgment` on the study
row its locked read already joins), so the pick costs no extra statement."""

from __future__ import annotations

import pytest
from django.test import Client

from studies import services
from studies.judgment import picking
from studies.models import Assignment, Judgment, Participant, Study
from tests.annotator import HX, open_assignment, start, url
from tests.factories import make_live_study

pytestmark = pytest.mark.django_db


def _open_task(client: Client, study: Study) -> tuple[Participant, Assignment]:
    participant = start(client, study)
    client.get(url("task", study))
    return participant, open_assignment(participant)


def test_a_pick_posted_after_close_saves_nothing_and_earns_no_code(client):
    study = make_live_study(items_per_participant=3, completion_code="NOPE-1")
    participant, current = _open_task(client, study)
    services.change_study_status(study=study, action="close")  # releases the open task too

    response = client.post(url("submit_judgment", study), {"assignment": current.pk, "choice": 1}, follow=True)

    assert b"This study has closed" in response.content
    assert b"NOPE-1" not in response.content
    assert not Judgment.objects.filter(assignment__item__study=study).exists()
    participant.refresh_from_db()
    assert (participant.status, participant.completion_code, participant.tasks_done) == (
        Participant.Status.ACTIVE, "", 0)
    assert not Assignment.objects.filter(item__study=study, status=Assignment.Status.COMPLETED).exists()


def test_a_pick_on_a_task_still_open_when_the_study_closed_is_refused_too(client):
    """Closed between the page and the pick without the close-out (the status alone): the task is
    still open, and the pick is refused all the same; over htmx the browser goes to the task page."""
    study = make_live_study(items_per_participant=3, completion_code="NOPE-2")
    participant, current = _open_task(client, study)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)

    response = client.post(url("submit_judgment", study), {"assignment": current.pk, "choice": 1}, headers=HX)
    assert response.headers.get("HX-Redirect") == url("task", study)
    page = client.get(url("task", study))
    assert b"This study has closed" in page.content
    assert b"NOPE-2" not in page.content
    assert not Judgment.objects.filter(assignment=current).exists()
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ACTIVE
    assert participant.completion_code == ""


def test_the_service_refuses_a_pick_into_a_closed_study():
    study = make_live_study()
    participant, current = _open_task(Client(), study)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    with pytest.raises(picking.StudyNotOpen):
        picking.record_judgment(participant=participant, assignment_id=current.pk, position=1)
    assert not Judgment.objects.exists()


def test_paused_a_participant_finishes_the_open_task_but_a_released_one_is_not_taken_back():
    study = make_live_study(items_per_participant=3)
    participant, current = _open_task(Client(), study)
    services.change_study_status(study=study, action="pause")
    saved = picking.record_judgment(participant=participant, assignment_id=current.pk, position=1)
    assert saved.created

    # A task released by the timeout while paused is not taken back by a late pick.
    second = participant.assignments.create(item=study.items.exclude(pk=current.item_id).first(),
                                            status=Assignment.Status.RELEASED)
    with pytest.raises(picking.StudyNotOpen):
        picking.record_judgment(participant=participant, assignment_id=second.pk, position=1)
    assert not Judgment.objects.filter(assignment=second).exists()
