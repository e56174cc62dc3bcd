"""Pause and close as the annotator lives them (#25): the counter keeps the share, the waiting
page polls and moves on by itself, a one-click return, and the final wording after Close."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from studies import services
from studies.judgment import flow
from studies.models import Assignment, Participant, Study
from tests.annotator import HX, open_assignment, start, url
from tests.factories import make_live_study

pytestmark = pytest.mark.django_db


def _pick(client: Client, study: Study, participant: Participant, **headers):
    assignment = open_assignment(participant)
    return client.post(url("submit_judgment", study), {"assignment": assignment.pk, "choice": 1}, headers=headers)


def test_the_open_task_keeps_its_counter_of_n_while_the_study_is_paused(client):
    study = make_live_study(6, items_per_participant=4)
    participant = start(client, study)
    client.get(url("task", study))
    _pick(client, study, participant)
    before = client.get(url("task", study)).content
    assert b"Task 2 of 4" in before
    services.change_study_status(study=study, action="pause")
    during = client.get(url("task", study))
    assert b"Task 2 of 4" in during.content
    assert b"1 of 4 done" in during.content  # it read "Task 2 of 2 / 1 of 2 done" before #25


def test_the_waiting_page_polls_and_continues_on_resume(client):
    study = make_live_study(4, items_per_participant=3)
    participant = start(client, study)
    client.get(url("task", study))
    services.change_study_status(study=study, action="pause")
    _pick(client, study, participant)  # the open task is finished; then the waiting page
    waiting = client.get(url("task", study))
    html = waiting.content.decode()
    assert 'id="paused-heading"' in html
    poll = re.search(r'hx-get="([^"]+)" hx-trigger="every 10s"', html)
    assert poll is not None
    assert "<script" not in html.split("<body", 1)[1]  # CSP: the poll is attributes only, no inline script
    assert client.get(poll.group(1).replace("&amp;", "&"), headers=HX).status_code == 204  # still paused

    services.change_study_status(study=study, action="resume")
    resumed = client.get(poll.group(1).replace("&amp;", "&"), headers=HX)
    assert resumed["HX-Redirect"] == url("task", study)
    page = client.get(url("task", study))
    assert b"Task 2 of 3" in page.content


def test_the_waiting_page_sends_a_worker_to_the_code_when_the_study_closes(client):
    study = make_live_study(4, items_per_participant=3, completion_code="SHUT-1")
    participant = start(client, study)
    client.get(url("task", study))
    services.change_study_status(study=study, action="pause")
    _pick(client, study, participant)
    services.change_study_status(study=study, action="close")
    answer = client.get(url("task", study) + "?waiting=1", headers=HX)
    assert answer["HX-Redirect"] == url("done", study)
    assert b"SHUT-1" in client.get(url("done", study)).content


@pytest.mark.parametrize("paused", [False, True])
def test_a_participant_returns_the_study_in_one_click(client, paused):
    study = make_live_study(4, items_per_participant=3, max_participants=1)
    participant = start(client, study)
    client.get(url("task", study))
    _pick(client, study, participant)
    if paused:
        services.change_study_status(study=study, action="pause")
    page = client.get(url("task", study)).content
    assert url("return_study", study).encode() in page
    assert flow.seats_taken(study) == 1

    response = client.post(url("return_study", study))
    assert response["Location"] == url("done", study)
    participant.refresh_from_db()
    assert participant.status == Participant.Status.RETURNED
    assert flow.seats_taken(study) == 0  # the seat is free again
    assert not Assignment.objects.filter(participant=participant, status=Assignment.Status.ASSIGNED).exists()
    assert participant.assignments.filter(judgment__isnull=False).count() == 1  # the pick is kept
    assert b"You have returned this study" in client.get(url("done", study)).content
    again = client.post(url("return_study", study))  # a second click changes nothing
    assert again["Location"] == url("done", study)


def test_return_needs_the_participants_browser_and_a_post(client):
    study = make_live_study()
    participant = start(client, study)
    assert client.get(url("return_study", study)).status_code == 405
    assert Client().post(url("return_study", study)).status_code == 404
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ACTIVE


def test_a_completed_participant_cannot_return(client):
    study = make_live_study(2, items_per_participant=1)
    participant = start(client, study)
    client.get(url("task", study))
    _pick(client, study, participant)
    participant.refresh_from_db()
    assert participant.status == Participant.Status.COMPLETED
    client.post(url("return_study", study))
    participant.refresh_from_db()
    assert participant.status == Participant.Status.COMPLETED


def test_newcomers_after_close_read_that_the_study_has_closed(client):
    study = make_live_study()
    services.change_study_status(study=study, action="close")
    page = client.get(url("join", study), {"invite": study.invite_token})
    assert b"This study has closed" in page.content
    assert b"not taking part" not in page.content
    draft = make_live_study(status=Study.Status.READY)
    assert b"This study is not open" in Client().get(url("join", draft), {"invite": draft.invite_token}).content


def test_the_task_page_offers_the_return_once(client):
    study = make_live_study()
    start(client, study)
    html = client.get(url("task", study)).content.decode()
    assert html.count('id="return-study"') == 1  # one form, one id
    assert html.count("Stop early") == 1
