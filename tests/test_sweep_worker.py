"""The periodic sweep through a REAL `celery worker` over Redis, sent by hand and by a real
`celery beat` on the schedule from settings (issue #12, deliverable 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from studies.models import Assignment, Participant, Study
from studies.tasks import sweep_abandoned
from tests.conftest import ROOT
from tests.factories import abandoned_participant, make_live_study, make_participant


def wait_for(predicate, timeout: float, logs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out; logs:\n{logs()}")


def test_the_sweep_sent_to_a_real_worker_frees_seats_and_assignments(celery_worker_process):
    study = make_live_study(assignment_timeout=timedelta(minutes=30))
    gone, task = abandoned_participant(study)
    here = make_participant(study=study, status=Participant.Status.ACTIVE, consent_at=timezone.now())
    paused = make_live_study(status=Study.Status.PAUSED)
    waiting, _ = abandoned_participant(paused)

    sweep_abandoned.delay()

    wait_for(lambda: Participant.objects.get(pk=gone.pk).status == Participant.Status.TIMED_OUT, 30,
             celery_worker_process.log)
    assert Assignment.objects.get(pk=task.pk).status == Assignment.Status.RELEASED
    assert Participant.objects.get(pk=here.pk).status == Participant.Status.ACTIVE
    assert Participant.objects.get(pk=waiting.pk).status == Participant.Status.ACTIVE  # a pause stops the clock
    assert "studies.tasks.sweep_abandoned" in celery_worker_process.log()


@pytest.fixture
def beat(celery_worker_process, tmp_path):
    """`celery beat` as `make run` and serve-prod start it, sweeping every second."""
    log_path = tmp_path / "beat.log"
    env = {**celery_worker_process.env(), "UALIGN_SWEEP_SECONDS": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ualign_web", "beat", "--loglevel", "INFO",
             "--schedule", str(tmp_path / "celerybeat-schedule"), "--pidfile", ""],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    yield lambda: log_path.read_text(errors="replace")[-3000:]
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_beat_sends_the_sweep_on_its_schedule_and_the_worker_runs_it(celery_worker_process, beat):
    study = make_live_study(assignment_timeout=timedelta(minutes=30))
    gone, task = abandoned_participant(study)

    def logs() -> str:
        return f"beat:\n{beat()}\nworker:\n{celery_worker_process.log()}"

    wait_for(lambda: Participant.objects.get(pk=gone.pk).status == Participant.Status.TIMED_OUT, 60, logs)
    assert Assignment.objects.get(pk=task.pk).status == Assignment.Status.RELEASED
    assert "Scheduler: Sending due task sweep-abandoned (studies.tasks.sweep_abandoned)" in beat()


def test_the_schedule_comes_from_the_environment():
    code = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'ualign_web.settings'); django.setup();"
            "from django.conf import settings as s; print(s.CELERY_BEAT_SCHEDULE)")
    env = {**os.environ, "UALIGN_SWEEP_SECONDS": "7"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "'task': 'studies.tasks.sweep_abandoned', 'schedule': 7.0" in out.stdout
    assert "'task': 'studies.tasks.allocate_judgments', 'schedule': 60.0" in out.stdout
    assert "'task': 'studies.tasks.check_questions', 'schedule': 60.0" in out.stdout
    off = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                         env={**env, "UALIGN_SWEEP_SECONDS": "0", "UALIGN_ALLOCATION_SECONDS": "0",
                              "UALIGN_QUESTION_SECONDS": "0"},
                         capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "{}"
