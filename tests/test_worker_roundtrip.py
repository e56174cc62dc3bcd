"""A task travels through Redis to a real `celery worker` process and writes to PostgreSQL."""

from __future__ import annotations

import time

from studies.models import Job
from studies.tasks import ping


def _wait_for(job: Job, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (Job.Status.DONE, Job.Status.FAILED):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job.pk} still {job.status} after {timeout}s")


def test_a_task_round_trips_through_a_real_worker(celery_worker_process):
    job = Job.objects.create(kind=Job.Kind.PING)
    ping.delay(job.pk)
    job = _wait_for(job)
    assert job.status == Job.Status.DONE, celery_worker_process.log()
    assert job.attempts == 1
    assert job.result["pid"] != __import__("os").getpid()
