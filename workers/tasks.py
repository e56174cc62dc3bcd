"""Celery tasks: thin wrappers that claim a Job row, call plain functions and persist.

Tasks take ids only (JSON), claim their row with a conditional UPDATE so a re-delivered
task does nothing twice, and record failures on the row. Heavy imports (torch) happen
inside the functions they need, never at import time: the web process imports this module.
"""

from __future__ import annotations

import logging
import os
import socket

from celery import shared_task

from studies.models import Job

logger = logging.getLogger(__name__)


@shared_task
def ping(job_id: int) -> None:
    """Round trip through a worker: claim the job and record which process ran it."""
    job = Job.objects.claim(job_id)
    if job is None:
        return
    job.mark_done({"host": socket.gethostname(), "pid": os.getpid()})
