"""A study's lifecycle: draft → ready → live ⇄ paused → closed, from the admin's buttons to the
annotator's pages (issue #12, deliverable 1)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from studies import services
from studies.models import Assignment, Judgment, Participant, Study
from tests.annotator import HX, join, open_assignment, start, url
from tests.factories import (
    make_live_study,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db


def status_url(study: Study, action: str) -> str:
    return reverse("admin:studies_study_status", args=[study.pk, action])


def pick(client: Client, study: Study, participant: Participant, choice: int = 1, **kwargs):
    client.get(url("task", study))
    return client.post(url("submit_judgment", study), {"assignment": open_assignment(participant).pk,
                                                       "choice": choice}, **kwargs)


# --- The one service that checks every move ---------------------------------------------------------


def test_a_study_goes_live_only_when_it_has_items_that_need_judging():
    study = make_study(status=Study.Status.READY)
    make_prompt(study=study)
    make_policy(study=study)
    with pytest.raises(services.LifecycleError, match="no comparison items to judge"):
        services.change_study_status(study=study, action="go-live")
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY

    ready = make_live_study(status=Study.Status.READY)
    assert services.change_study_status(study=ready, action="go-live").status == Study.Status.LIVE


def test_closing_is_final():
    study = make_live_study()
    services.change_study_status(study=study, action="close")
    for action in ("go-live", "resume", "pause", "close"):
        with pytest.raises(services.LifecycleError, match="closing is final"):
            services.change_study_status(study=study, action=action)
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED
    assert not study.can_move_to(Study.Status.LIVE)
    with pytest.raises(ValidationError):
        study.move_to(Study.Status.LIVE)


def test_live_and_paused_move_back_and_forth_and_the_buttons_follow_the_status():
    study = make_live_study()
    assert [a.name for a in services.lifecycle_actions(study)] == ["pause", "close"]
    study = services.change_study_status(study=study, action="pause")
    assert study.status == Study.Status.PAUSED
    assert [a.name for a in services.lifecycle_actions(study)] == ["resume", "close"]
    with pytest.raises(services.LifecycleError, match="is paused, so it can't pause"):
        services.change_study_status(study=study, action="pause")
    study = services.change_study_status(study=study, action="resume")
    assert study.status == Study.Status.LIVE
    draft = make_study()
    assert services.lifecycle_actions(draft) == []
    with pytest.raises(services.LifecycleError, match="is draft"):
        services.change_study_status(study=draft, action="go-live")


def test_the_database_accepts_paused_and_refuses_an_unknown_status():
    study = make_study(status=Study.Status.PAUSED)
    assert Study.objects.get(pk=study.pk).status == "paused"
    with pytest.raises(IntegrityError), transaction.atomic():
        Study.objects.filter(pk=study.pk).update(status="archived")


# --- The admin's buttons: a confirmation page, then a POST with CSRF ----------------------------------


def test_a_lifecycle_button_asks_for_confirmation_then_moves_the_study(researcher):
    study = make_live_study(status=Study.Status.READY)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(researcher)
    page = browser.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert status_url(study, "go-live") in page
    assert status_url(study, "pause") not in page

    confirm = browser.get(status_url(study, "go-live"))
    assert confirm.status_code == 200
    assert b"Yes, go live" in confirm.content
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY  # a GET changes nothing

    assert browser.post(status_url(study, "go-live")).status_code == 403  # no CSRF token
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY
    token = confirm.context["csrf_token"]
    response = browser.post(status_url(study, "go-live"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:studies_study_change", args=[study.pk])
    assert Study.objects.get(pk=study.pk).status == Study.Status.LIVE


def test_a_refused_move_says_why_and_changes_nothing(researcher_client):
    study = make_study(status=Study.Status.READY)
    confirm = researcher_client.get(status_url(study, "go-live"))
    assert b"no comparison items to judge yet" in confirm.content
    assert b"Yes, go live" not in confirm.content
    response = researcher_client.post(status_url(study, "go-live"), follow=True)
    assert b"no comparison items to judge yet" in response.content
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY
    assert researcher_client.get(status_url(study, "delete")).status_code == 404


def test_the_buttons_need_the_change_study_permission(client, django_user_model):
    study = make_live_study()
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_study"))
    client.force_login(user)
    assert client.get(status_url(study, "pause")).status_code == 403
    assert client.post(status_url(study, "pause")).status_code == 403
    assert Study.objects.get(pk=study.pk).status == Study.Status.LIVE
    user.user_permissions.add(Permission.objects.get(codename="change_study"))
    user = get_user_model().objects.get(pk=user.pk)  # a fresh permission cache
    client.force_login(user)
    assert client.post(status_url(study, "pause")).status_code == 302
    assert Study.objects.get(pk=study.pk).status == Study.Status.PAUSED


# --- Paused: newcomers wait; those mid-study finish the task they have open -------------------------


def test_a_paused_study_tells_newcomers_politely_and_creates_nobody(client):
    study = make_live_study()
    services.change_study_status(study=study, action="pause")
    landing = client.get(url("join", study), {"invite": study.invite_token})
    assert landing.status_code == 200
    assert b"This study is paused" in landing.content
    assert b"try again later" in landing.content
    response = client.post(url("join", study), {"invite": study.invite_token})
    assert b"This study is paused" in response.content
    assert not Participant.objects.exists()


def test_a_participant_mid_task_finishes_that_task_when_paused_then_waits(client):
    study = make_live_study(items_per_participant=3)
    participant = start(client, study)
    client.get(url("task", study))
    current = open_assignment(participant)
    services.change_study_status(study=study, action="pause")

    page = client.get(url("task", study))
    assert page.status_code == 200
    assert page.context["assignment"].pk == current.pk  # the open task is still theirs
    response = client.post(url("submit_judgment", study), {"assignment": current.pk, "choice": 1}, headers=HX)
    assert response["HX-Redirect"] == url("task", study)
    assert Judgment.objects.filter(assignment=current).exists()
    waiting = client.get(url("task", study))
    assert b"This study is paused" in waiting.content
    assert b"Your answers so far are saved" in waiting.content
    assert participant.assignments.filter(status=Assignment.Status.ASSIGNED).count() == 0  # no new task
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ACTIVE  # not completed by the pause

    services.change_study_status(study=study, action="resume")
    resumed = client.get(url("task", study))
    assert resumed.status_code == 200
    assert resumed.context["assignment"].pk != current.pk


def test_a_participant_before_the_tasks_waits_on_the_paused_page(client):
    study = make_live_study()
    join(client, study)
    services.change_study_status(study=study, action="pause")
    response = client.get(url("consent", study))
    assert b"This study is paused" in response.content


# --- Closed: everyone who worked gets the code ------------------------------------------------------


def test_closing_completes_every_participant_with_a_pick_and_gives_them_the_code(client):
    study = make_live_study(items_per_participant=3, completion_code="DONE-7")
    worker = start(client, study)
    pick(client, study, worker)
    other = Client()
    idle = start(other, study)
    other.get(url("task", study))  # a task open, no pick yet
    services.change_study_status(study=study, action="close")

    worker.refresh_from_db()
    idle.refresh_from_db()
    assert (worker.status, worker.completion_code) == (Participant.Status.COMPLETED, "DONE-7")
    assert idle.status == Participant.Status.ACTIVE
    assert b"This study has closed" in other.get(url("task", study)).content
    assert not Assignment.objects.filter(item__study=study, status=Assignment.Status.ASSIGNED).exists()
    done = client.get(url("task", study), follow=True)
    assert done.redirect_chain[-1][0] == url("done", study)
    assert b"DONE-7" in done.content


def test_a_pick_posted_after_the_study_closed_is_refused_and_earns_no_code(client):
    """Closed means closed (#24, finding 4; this test asserted the opposite before): a pick posted
    after the close saves nothing, and a participant without a pick gets no code."""
    study = make_live_study(items_per_participant=3, completion_code="LATE-1")
    participant = start(client, study)
    client.get(url("task", study))
    current = open_assignment(participant)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)  # closed between page and pick
    response = client.post(url("submit_judgment", study), {"assignment": current.pk, "choice": 1}, follow=True)
    assert b"This study has closed" in response.content
    assert b"LATE-1" not in response.content
    assert not Judgment.objects.filter(assignment=current).exists()
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ACTIVE


def test_a_participant_without_a_pick_sees_that_the_study_is_closed(client):
    study = make_live_study()
    start(client, study)
    services.change_study_status(study=study, action="close")
    response = client.get(url("task", study))
    assert b"This study has closed" in response.content
    assert b"completion-code" not in response.content


def test_a_joined_participant_is_not_completed_by_the_close():
    study = make_live_study()
    joined = make_participant(study=study)
    services.change_study_status(study=study, action="close")
    joined.refresh_from_db()
    assert joined.status == Participant.Status.JOINED
