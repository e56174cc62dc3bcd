"""LLMdoctor's training through a REAL `celery worker` over Redis: the worker is killed mid-training,
and the re-delivered task resumes from the last checkpoint and finishes the chain."""

from __future__ import annotations

import pytest

from studies import services
from studies.models import Candidate, Doctor, Job, Study
from tests.pipeline import REWARDS, doctor_study, wait_for_worker

STEPS, EVERY = 150, 5


@pytest.fixture(autouse=True)
def doctor_env(monkeypatch, tmp_path):
    """Before the worker starts (autouse fixtures come first): its doctors go to this test's folder."""
    monkeypatch.setenv("UALIGN_DOCTOR_DIR", str(tmp_path / "doctors"))
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


def test_a_worker_killed_mid_training_resumes_from_the_last_checkpoint_after_a_restart(
    celery_worker_process, tiny_model, monkeypatch
):
    # Enough steps that the kill lands mid-training; each is a few milliseconds on the tiny model.
    tfpo = {"steps": STEPS, "pairs_per_step": 2, "checkpoint_every": EVERY, "learning_rate": 1e-3, "lora_rank": 2}
    study = doctor_study(tiny_model, {"beta": 0.7, "rewards": REWARDS, "tfpo": tfpo}, n_prompts=1)
    parent = services.prepare_study(study=study)
    train = parent.steps.get(kind=Job.Kind.TRAIN_DOCTORS)

    def past_a_checkpoint() -> bool:
        return Doctor.objects.filter(policy__study=study, step__gt=EVERY).exists()

    wait_for_worker(past_a_checkpoint, 120, celery_worker_process, "training past its first checkpoint")
    celery_worker_process.kill_all()
    train.refresh_from_db()
    killed_at = Doctor.objects.get(policy__study=study).step
    assert train.status == Job.Status.RUNNING, "the kill should land mid-training; make the training longer"
    assert killed_at < STEPS

    # The restarted worker takes the unacked message back (Redis visibility timeout) and reclaims
    # the job once its heartbeat is stale; short limits keep the test quick.
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "1")
    monkeypatch.setenv("UALIGN_JOB_STALE_SECONDS", "2")
    celery_worker_process.start()
    wait_for_worker(lambda: Study.objects.get(pk=study.pk).status != Study.Status.PREPARING, 240, celery_worker_process,
          "the chain")

    train.refresh_from_db()
    assert train.status == Job.Status.DONE, celery_worker_process.log()
    assert train.attempts == 2
    doctor = Doctor.objects.get(policy__study=study)
    assert doctor.status == Doctor.Status.DONE
    # Resumed from a checkpoint written before the kill, not from scratch…
    assert doctor.resumed_from is not None
    assert EVERY <= doctor.resumed_from <= killed_at
    assert doctor.resumed_from % EVERY == 0
    # …and the history is one uninterrupted run: every step once.
    assert [h["step"] for h in doctor.history] == list(range(1, STEPS + 1))
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY
    policy = study.policies.get(name="doctor")
    assert Candidate.objects.filter(generator=policy.generator).exists()
