"""Prolific's review (#25): tasks done of offered, attention passed of shown, time; a rejection
needs a reason (exported); a bonus CSV in Prolific's bulk-bonus format for partial completers."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from studies.judgment import participants
from studies.models import Participant
from tests.annotator import open_assignment, start, url
from tests.factories import make_live_study, make_participant

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:studies_participant_changelist"


def _action(client: Client, action: str, selected: list[Participant], **extra):
    return client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [p.pk for p in selected], **extra})


def _worker(study, pid: str, *, done: int, status=Participant.Status.COMPLETED, **fields) -> Participant:
    return make_participant(study=study, external_id=pid, status=status, tasks_done=done, **fields)


def test_a_rejection_asks_for_its_reason_and_the_export_carries_it(researcher_client):
    study = make_live_study()
    failed = _worker(study, "5f1a2b3c4d5e6f7a8b9c0d1e", done=1, status=Participant.Status.ENDED)
    asked = _action(researcher_client, "mark_rejected", [failed])
    assert asked.status_code == 200
    assert b'name="reason"' in asked.content
    failed.refresh_from_db()
    assert failed.review_status == Participant.Review.PENDING  # nothing without a reason

    blank = _action(researcher_client, "mark_rejected", [failed], apply="1", reason="   ")
    assert b"This field is required" in blank.content
    failed.refresh_from_db()
    assert failed.review_status == Participant.Review.PENDING

    done = _action(researcher_client, "mark_rejected", [failed], apply="1", reason="=Failed 2 of 3 checks")
    assert done.status_code == 302
    failed.refresh_from_db()
    assert (failed.review_status, failed.review_reason) == ("rejected", "=Failed 2 of 3 checks")
    rows = list(csv.DictReader(io.StringIO(_action(researcher_client, "export_review_list", [failed]).content.decode())))
    assert rows[0]["decision"] == "REJECT"
    assert rows[0]["review_reason"] == "'=Failed 2 of 3 checks"  # formula-safe

    with pytest.raises(ValueError, match="reason"):
        participants.review_participants(participants=Participant.objects.all(), verdict="rejected")


def test_approving_clears_an_earlier_reason():
    study = make_live_study()
    worker = _worker(study, "A1", done=2, review_status="rejected", review_reason="too fast")
    participants.review_participants(participants=Participant.objects.filter(pk=worker.pk), verdict="approved")
    worker.refresh_from_db()
    assert (worker.review_status, worker.review_reason) == ("approved", "")


def test_the_review_list_shows_tasks_of_offered_attention_passed_and_time(researcher_client):
    study = make_live_study(4, items_per_participant=3)
    browser = Client()
    worker = start(browser, study, PROLIFIC_PID="5f1a2b3c4d5e6f7a8b9c0d1e")
    browser.get(url("task", study))
    browser.post(url("submit_judgment", study), {"assignment": open_assignment(worker).pk, "choice": 1})
    Participant.objects.filter(pk=worker.pk).update(attention_checks_done=2, attention_failures=1,
                                                    created_at=timezone.now() - timedelta(minutes=5))  # fmt: skip

    page = researcher_client.get(reverse(CHANGELIST)).content.decode()
    assert "1 of 3" in page  # tasks done of the share
    assert "1 of 2" in page  # attention checks passed of shown
    rows = list(csv.DictReader(io.StringIO(_action(researcher_client, "export_review_list", [worker]).content.decode())))
    row = rows[0]
    assert (row["tasks_done"], row["tasks_offered"], row["attention_passed"], row["attention_shown"]) == (
        "1", "3", "1", "2")
    assert row["time_on_task_s"].isdigit()
    assert 299 <= int(row["session_s"]) <= 400


def test_the_bonus_csv_pays_partial_completers_in_prolifics_format(researcher_client):
    study = make_live_study(items_per_participant=10)
    partial = _worker(study, "5f1a2b3c4d5e6f7a8b9c0d1e", done=2)
    timed_out = _worker(study, "60a1b2c3d4e5f60718293a4b", done=3, status=Participant.Status.TIMED_OUT)
    full = _worker(study, "6123456789abcdef01234567", done=10)
    rejected = _worker(study, "6223456789abcdef01234567", done=4, review_status="rejected", review_reason="x")
    failed = _worker(study, "6323456789abcdef01234567", done=4, status=Participant.Status.ENDED)
    idle = _worker(study, "6423456789abcdef01234567", done=0, status=Participant.Status.RETURNED)
    hostile = _worker(study, "=HYPERLINK(1)", done=2)
    simulated = _worker(study, "6523456789abcdef01234567", done=2, is_simulated=True)
    everyone = [partial, timed_out, full, rejected, failed, idle, hostile, simulated]

    asked = _action(researcher_client, "export_bonus_list", everyone)
    assert b'name="per_task"' in asked.content
    refused = _action(researcher_client, "export_bonus_list", everyone, apply="1", per_task="-1")
    assert refused["Content-Type"].startswith("text/html")
    response = _action(researcher_client, "export_bonus_list", everyone, apply="1", per_task="0.125")
    assert response["Content-Type"].startswith("text/csv")
    text = response.content.decode()
    assert text == "5f1a2b3c4d5e6f7a8b9c0d1e,0.25\n60a1b2c3d4e5f60718293a4b,0.38\n"  # 2 × 0.125; 3 × 0.125 half up
    for line in text.splitlines():
        assert re.fullmatch(r"[A-Za-z0-9]+,\d+\.\d{2}", line)


def test_the_bonus_rate_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        participants.bonus_csv(Participant.objects.all(), per_task=Decimal("0"))
