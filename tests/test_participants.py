"""Places and participants: seats freed by returning or timing out, the researcher's review of
participants, the approve/reject CSV, and the study page's places figure (issue #12, deliverable 3)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from studies import services
from studies.judgment import flow, participants
from studies.models import Assignment, Judgment, Participant, Study
from studies.text import unescape_cell
from tests.annotator import HX, join, open_assignment, start, url
from tests.factories import make_live_study, make_participant

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(hours=2)


def changelist_action(client, action: str, selected: list[Participant], **extra):
    return client.post(reverse("admin:studies_participant_changelist"),
                       {"action": action, "_selected_action": [p.pk for p in selected], **extra}, follow=True)


def idle_since(participant: Participant, ago: timedelta) -> None:
    Participant.objects.filter(pk=participant.pk).update(last_active_at=timezone.now() - ago)


# --- Seats ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("leave", ["returned", "timed out"])
def test_a_returned_or_timed_out_participant_frees_their_seat_and_open_task(leave):
    study = make_live_study(max_participants=1)
    first_browser = Client()
    first = start(first_browser, study)
    first_browser.get(url("task", study))
    task = open_assignment(first)
    assert flow.seats_taken(study) == 1
    assert b"This study is full" in Client().get(url("join", study), {"invite": study.invite_token}).content

    if leave == "returned":
        outcome = participants.return_participants(participants=Participant.objects.filter(pk=first.pk))
        assert outcome == participants.BulkChange(changed=1, skipped=0)
    else:
        idle_since(first, LONG_AGO)
        assert participants.time_out_inactive(study=study) == 1

    first.refresh_from_db()
    task.refresh_from_db()
    assert first.status == (Participant.Status.RETURNED if leave == "returned" else Participant.Status.TIMED_OUT)
    assert task.status == Assignment.Status.RELEASED
    task.item.refresh_from_db()
    assert (task.item.live_assignments, task.item.rotation_use) == (0, {})  # #14's counters gave it back
    assert flow.seats_taken(study) == 0
    second = start(Client(), study)  # the place is free again
    assert second.status == Participant.Status.ACTIVE


def test_the_sweep_times_out_only_participants_in_progress_who_were_idle_too_long():
    study = make_live_study(assignment_timeout=timedelta(minutes=30))
    idle, busy, joined, done = (Client() for _ in range(4))
    idle_p, busy_p = start(idle, study), start(busy, study)
    idle.get(url("task", study))
    idle.post(url("submit_judgment", study), {"assignment": open_assignment(idle_p).pk, "choice": 1})
    busy.get(url("task", study))
    joined_p = join(joined, study)
    done_p = make_participant(study=study, status=Participant.Status.COMPLETED, consent_at=timezone.now())
    for p in (idle_p, joined_p, done_p):
        idle_since(p, LONG_AGO)
    idle_since(busy_p, timedelta(minutes=10))

    result = participants.sweep_study(study=study)

    assert result.timed_out == 1
    statuses = dict(Participant.objects.values_list("pk", "status"))
    assert statuses == {idle_p.pk: "timed_out", busy_p.pk: "active", joined_p.pk: "joined", done_p.pk: "completed"}
    assert Judgment.objects.filter(assignment__participant=idle_p).count() == 1  # picks are kept
    assert busy_p.assignments.filter(status=Assignment.Status.ASSIGNED).count() == 1
    timed_out_page = idle.get(url("task", study), follow=True)
    assert b"This session has timed out" in timed_out_page.content


def test_the_sweep_releases_abandoned_assignments_of_participants_still_in_progress():
    study = make_live_study(assignment_timeout=timedelta(minutes=30))
    browser = Client()
    participant = start(browser, study)
    browser.get(url("task", study))
    Assignment.objects.filter(participant=participant).update(assigned_at=timezone.now() - LONG_AGO)
    result = participants.sweep_study(study=study)
    assert (result.released, result.timed_out) == (1, 0)


def test_every_step_and_pick_counts_as_activity():
    study = make_live_study(items_per_participant=3)
    browser = Client()
    participant = join(browser, study)
    browser.post(url("consent", study), {"decision": "accept"})
    idle_since(participant, LONG_AGO)
    browser.post(url("instructions", study))  # the first task, in the answer
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ACTIVE
    assert timezone.now() - participant.last_active_at < timedelta(minutes=1)
    idle_since(participant, LONG_AGO)
    response = browser.post(url("submit_judgment", study), {"assignment": open_assignment(participant).pk,
                                                            "choice": 1}, headers=HX)
    assert response.status_code == 200
    participant.refresh_from_db()
    assert timezone.now() - participant.last_active_at < timedelta(minutes=1)


def test_a_pause_stops_the_idle_clock():
    study = make_live_study()
    participant = start(Client(), study)
    services.change_study_status(study=study, action="pause")
    idle_since(participant, LONG_AGO)  # the pause lasted two hours
    services.change_study_status(study=study, action="resume")
    assert participants.sweep_study(study=study).timed_out == 0
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ACTIVE


# --- The researcher's review ------------------------------------------------------------------------


def test_approve_reject_and_return_apply_to_the_participants_they_fit(researcher_client):
    study = make_live_study()
    completed = make_participant(study=study, status=Participant.Status.COMPLETED, external_id="PID-DONE")
    failed = make_participant(study=study, status=Participant.Status.ENDED, external_id="PID-FAILED")
    active = make_participant(study=study, status=Participant.Status.ACTIVE, external_id="PID-ACTIVE",
                              consent_at=timezone.now())

    response = changelist_action(researcher_client, "mark_approved", [completed, failed, active])
    assert "1 approved" in response.content.decode()
    assert "2 skipped: only participants who completed can be approved" in response.content.decode()
    changelist_action(researcher_client, "mark_rejected", [failed], apply="1", reason="Failed attention checks")
    returned = changelist_action(researcher_client, "mark_returned", [active, completed])
    assert "1 marked returned" in returned.content.decode()

    reviews = dict(Participant.objects.values_list("external_id", "review_status"))
    assert reviews == {"PID-DONE": "approved", "PID-FAILED": "rejected", "PID-ACTIVE": "pending"}
    statuses = dict(Participant.objects.values_list("external_id", "status"))
    assert statuses == {"PID-DONE": "completed", "PID-FAILED": "ended", "PID-ACTIVE": "returned"}


def test_the_review_list_exports_prolific_pids_with_decisions_and_formula_safe_cells(researcher_client):
    study = make_live_study(completion_code="CODE-1")
    browser = Client()
    worker = start(browser, study, PROLIFIC_PID="5f1a2b3c4d5e6f7a8b9c0d1e")
    browser.get(url("task", study))
    browser.post(url("submit_judgment", study), {"assignment": open_assignment(worker).pk, "choice": 1})
    Participant.objects.filter(pk=worker.pk).update(status=Participant.Status.COMPLETED, review_status="approved",
                                                    completion_code="CODE-1")
    hostile = make_participant(study=study, external_id="=HYPERLINK(1)", status=Participant.Status.ENDED,
                               review_status="rejected")

    response = changelist_action(researcher_client, "export_review_list", [worker, hostile])
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["PROLIFIC_PID"], r["decision"], r["status"], r["picks"]) for r in rows] == [
        ("5f1a2b3c4d5e6f7a8b9c0d1e", "APPROVE", "completed", "1"),
        ("'=HYPERLINK(1)", "REJECT", "ended", "0"),
    ]
    assert unescape_cell(rows[1]["PROLIFIC_PID"]) == "=HYPERLINK(1)"
    assert rows[0]["completion_code"] == "CODE-1"


def test_reviewing_needs_the_change_participant_permission(client, django_user_model):
    study = make_live_study()
    done = make_participant(study=study, status=Participant.Status.COMPLETED)
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_participant"))
    client.force_login(user)
    page = client.get(reverse("admin:studies_participant_changelist")).content.decode()
    assert "export_review_list" in page
    assert "mark_approved" not in page
    changelist_action(client, "mark_approved", [done])
    done.refresh_from_db()
    assert done.review_status == Participant.Review.PENDING


def test_the_participants_list_filters_by_study_status_and_review(researcher_client):
    study, other = make_live_study(), make_live_study()
    make_participant(study=study, status=Participant.Status.TIMED_OUT, external_id="gone")
    make_participant(study=study, status=Participant.Status.ACTIVE, external_id="here")
    make_participant(study=other, status=Participant.Status.TIMED_OUT, external_id="elsewhere")
    base = reverse("admin:studies_participant_changelist")
    response = researcher_client.get(f"{base}?study__id__exact={study.pk}&status__in=timed_out,returned")
    assert [p.external_id for p in response.context["cl"].result_list] == ["gone"]
    response = researcher_client.get(f"{base}?review_status__exact=pending&status__exact=active")
    assert [p.external_id for p in response.context["cl"].result_list] == ["here"]


# --- The study page's places figure --------------------------------------------------------------


def test_the_study_page_shows_places_filled_and_participants_by_status(researcher_client):
    study = make_live_study(max_participants=3)
    browser = Client()
    worker = start(browser, study)
    browser.get(url("task", study))
    browser.post(url("submit_judgment", study), {"assignment": open_assignment(worker).pk, "choice": 1})
    make_participant(study=study, status=Participant.Status.RETURNED, consent_at=timezone.now())
    make_participant(study=study)  # joined only

    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert '<span id="places-summary">1 / 3</span>' in page
    assert reverse("admin:studies_study_places", args=[study.pk]) in page

    partial = researcher_client.get(reverse("admin:studies_study_places", args=[study.pk]), headers=HX)
    html = partial.content.decode()
    assert "<html" not in html
    assert '<strong id="places-filled">1 / 3</strong>' in html
    assert 'hx-trigger="every 5s"' in html  # live: it keeps polling
    groups = {g.label: g for g in participants.places(study).groups}
    assert (groups["Active"].count, groups["Returned or timed out"].count) == (1, 1)
    assert groups["Joined, not yet consented"].count == 1
    assert groups["Active"].median_time_on_task is not None
    assert groups["Completed"].last_joined is None

    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    closed = researcher_client.get(reverse("admin:studies_study_places", args=[study.pk]), headers=HX)
    assert "hx-trigger" not in closed.content.decode()


def test_the_places_page_also_renders_as_a_page_of_its_own(researcher_client):
    study = make_live_study(max_participants=4)
    page = researcher_client.get(reverse("admin:studies_study_places", args=[study.pk]))
    assert page.status_code == 200
    assert '<strong id="places-filled">0 / 4</strong>' in page.content.decode()
    assert "<html" in page.content.decode()


def test_the_places_page_needs_the_view_study_permission(client, django_user_model):
    study = make_live_study()
    client.force_login(django_user_model.objects.create_user("staff", password="pw", is_staff=True))
    assert client.get(reverse("admin:studies_study_places", args=[study.pk])).status_code == 403


def test_closing_a_study_releases_open_tasks_and_gives_their_places_back_on_the_items_counters():
    study = make_live_study()
    browser = Client()
    person = start(browser, study)
    browser.get(url("task", study))
    task = open_assignment(person)
    task.item.refresh_from_db()
    assert task.item.live_assignments == 1

    services.change_study_status(study=study, action="close")

    task.refresh_from_db()
    task.item.refresh_from_db()
    assert task.status == Assignment.Status.RELEASED
    assert (task.item.live_assignments, task.item.rotation_use) == (0, {})
