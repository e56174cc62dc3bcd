"""Celery tasks: thin wrappers that claim a Job row, run one step of `studies.steps`, and hand off.

Tasks take ids only (JSON), claim their row with a conditional UPDATE so a re-delivered
task does nothing twice, and record failures on the row. Heavy imports (torch) happen
inside `workers.generation`'s functions, never at import time: the web process imports this
module (`studies.services` enqueues through it).

The "Prepare" chain (`studies.services.prepare_study`) is four step jobs under one parent:

    generate_candidates (gpu)  →  build_populations (gpu)  →  fit_policies  →  build_items

and, in a study with LLMdoctor policies (`studies.services.pipeline`), seven:

    generate_candidates (the pool) → build_populations → train_doctors (gpu) →
    generate_candidates (the doctor policies' guided candidates) → build_populations → fit → items

Each step, when done, enqueues the next on commit (`finish_step`); the last moves the study to
ready. A failure marks the step and the chain failed and returns the study to draft
(`fail_step`); pressing Prepare again continues from what is saved. The hand-offs live here,
beside the tasks they enqueue, so that imports point one way: services → tasks → steps.

Crash safety. While a step runs, a heartbeat thread touches `Job.heartbeat_at` every third of
`UALIGN_JOB_STALE_SECONDS`. A delivery that finds its job running with a fresh heartbeat is a
duplicate (Redis visibility timeout, or a redelivery racing a live worker): it retries later
with a countdown and stops once the job has finished. If the worker died, the heartbeat goes
stale and the redelivered task (acks_late + reject_on_worker_lost, or Redis' restore of unacked
messages) reclaims the job, up to `UALIGN_JOB_MAX_ATTEMPTS` attempts; every step skips the
work already saved, one prompt per transaction.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from kombu.exceptions import KombuError

from studies import allocation, candidate_import, importing, simulated_annotators
from studies.estimate import question, results_cache
from studies.judgment import participants
from studies.models import Job, Study, StudyQuestion
from studies.steps import OnProgress, StepError, doctor, fit, items, pool, population

logger = logging.getLogger(__name__)

# A duplicate delivery checks back this often (at most) while the original runs.
DEFER_RETRIES = 1000


# --------------------------------------------------------------------------------------------
# Sending a job to its task (issue #24: a broker outage must not leave it "queued" forever)

NOT_STARTED = "Not started: the queue is unreachable. Try again in a minute."
# What a failed publish raises: the broker's errors, and the socket errors under them.
BROKER_ERRORS = (KombuError, OSError)


class QueueUnavailable(Exception):
    """The broker could not take a job's message; the job (and its chain) is marked not started.

    `ualign_web.errors.QueueUnavailableMiddleware` answers it with a 503 page.
    """


def send(task: Task, job: Job) -> None:
    """Send `job` to `task` once the current transaction commits (`_publish`)."""
    transaction.on_commit(lambda: _publish(task, job.pk))


def _publish(task: Task, job_id: int) -> None:
    """Publish the job's message; if the broker can't be reached (after the publish retry policy),
    mark the job failed with NOT_STARTED (a chain's step fails its chain, the study returns to
    draft) and raise QueueUnavailable, so that nothing stays queued with no message behind it."""
    try:
        task.delay(job_id)  # with CELERY_TASK_PUBLISH_RETRY_POLICY's retries
    except BROKER_ERRORS as exc:
        logger.error("job %s was not started: the broker is unreachable (%r)", job_id, exc)
        job = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).first()
        if job is not None:
            Job.objects.filter(pk=job_id).update(payload=None)
            fail_step(job, NOT_STARTED)
        raise QueueUnavailable(NOT_STARTED) from exc


@shared_task
def ping(job_id: int) -> None:
    """Round trip through a worker: claim the job and record which process ran it."""
    job = Job.objects.claim(job_id)
    if job is None:
        return
    job.mark_done({"host": socket.gethostname(), "pid": os.getpid()})


@contextmanager
def heartbeat(job: Job) -> Iterator[None]:
    """Keep `job.heartbeat_at` fresh from a background thread while the body runs."""
    stop = threading.Event()
    interval = max(Job.stale_after().total_seconds() / 3, 0.2)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING).update(heartbeat_at=timezone.now())
        except Exception:  # a missed beat only risks a duplicate claim, which the steps tolerate
            logger.exception("heartbeat of job %s failed", job.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{job.pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _claim_or_defer(task: Task, job_id: int) -> Job | None:
    """Claim the job; on a duplicate delivery of a live job, retry later; otherwise None."""
    job = Job.objects.claim(job_id)
    if job is not None:
        return job
    current = Job.objects.filter(pk=job_id).first()
    if current is None or current.status != Job.Status.RUNNING:
        return None  # finished (or deleted): this delivery is a duplicate
    fresh = current.heartbeat_at and current.heartbeat_at >= timezone.now() - Job.stale_after()
    if fresh:
        logger.info("job %s is running elsewhere; checking back later", job_id)
        raise task.retry(countdown=max(Job.stale_after().total_seconds() / 2, 1), max_retries=DEFER_RETRIES)
    fail_step(current, f"Gave up after {current.attempts} attempts: the worker running this job stopped each time.")
    return None


def run_step(task: Task, job_id: int, body: Callable[[Job], dict[str, Any]]) -> None:
    """Claim → run `body(job)` with a heartbeat → finish the step, or fail the chain."""
    job = _claim_or_defer(task, job_id)
    if job is None:
        return
    try:
        with heartbeat(job):
            result = body(job)
    except Exception as exc:
        logger.exception("job %s (%s) failed", job.pk, job.kind)
        fail_step(job, exc)
        raise
    finish_step(job, result)


def study_of(job: Job) -> Study:
    """The study a step job works on (every step job has one)."""
    if job.study is None:
        raise StepError(f"job {job.pk} belongs to no study")
    return job.study


def reporter(job: Job) -> OnProgress:
    """Progress of a step on its row, mirrored on its parent's bar (each step is an equal share)."""

    def report(done: float, total: float, message: str) -> None:
        fraction = done / total if total else 1.0
        job.report_progress(fraction, message)
        if job.parent_id:
            step, steps = job.params.get("step", 0), job.params.get("steps", 1)
            Job.objects.get(pk=job.parent_id).report_progress((step + fraction) / steps, message)

    return report


# --------------------------------------------------------------------------------------------
# The steps of the Prepare chain


@shared_task(bind=True, acks_late=True)
def generate_candidates(self: Task, job_id: int) -> None:
    """Sample every prompt's pool (and checkpoint/doctor candidates); one prompt per transaction.

    A job with params {"doctors": false} leaves the doctor policies' candidates for a later step.
    """
    run_step(self, job_id, lambda job: pool.generate_pools(
        study_of(job), doctors=bool(job.params.get("doctors", True)), on_progress=reporter(job)))


@shared_task(bind=True, acks_late=True)
def train_doctors(self: Task, job_id: int) -> None:
    """Build the doctors' preference pairs, token rewards and TFPO training (resuming from checkpoints)."""
    run_step(self, job_id, lambda job: doctor.train_doctors(study_of(job), on_progress=reporter(job)))


@shared_task(bind=True, acks_late=True)
def build_populations(self: Task, job_id: int) -> None:
    """Turn each prompt's candidates into its population U (T × N) from the study's preference sources."""
    run_step(self, job_id, lambda job: population.build_populations(study_of(job), on_progress=reporter(job)))


@shared_task(bind=True, acks_late=True)
def fit_policies(self: Task, job_id: int) -> None:
    """Fit every policy at every k of the study on every prompt."""
    run_step(self, job_id, lambda job: fit.fit_policies(study_of(job), on_progress=reporter(job)))


@shared_task(bind=True, acks_late=True)
def build_items(self: Task, job_id: int) -> None:
    """Assemble the blinded comparison items (and attention checks) of every prompt."""
    run_step(self, job_id, lambda job: items.build_study_items(study_of(job), on_progress=reporter(job)))


STEP_TASKS: dict[str, Task] = {
    Job.Kind.GENERATE: generate_candidates,
    Job.Kind.POPULATE: build_populations,
    Job.Kind.TRAIN_DOCTORS: train_doctors,
    Job.Kind.FIT: fit_policies,
    Job.Kind.BUILD_ITEMS: build_items,
}


def enqueue_step(step: Job) -> None:
    """Send a step job to its task once the current transaction commits."""
    send(STEP_TASKS[step.kind], step)


@transaction.atomic
def finish_step(job: Job, result: dict[str, Any]) -> None:
    """Mark a step done and enqueue the next one; after the last, the study becomes ready."""
    job.mark_done(result)
    if job.parent_id is None:
        return
    parent = Job.objects.select_for_update().get(pk=job.parent_id)
    steps = list(parent.steps.order_by("id"))
    following = [s for s in steps if s.status == Job.Status.QUEUED]
    if following:
        done = sum(s.status == Job.Status.DONE for s in steps)
        parent.report_progress(done / len(steps), f"{following[0].get_kind_display()}: queued")
        enqueue_step(following[0])
        return
    parent.mark_done({s.kind: s.result for s in steps})
    study = Study.objects.select_for_update().get(pk=parent.study_id)
    # A "Generate only" chain (services.generate_only) leaves the study a draft, its pool saved.
    after = Study.Status.DRAFT if parent.params.get("only") == Job.Kind.GENERATE else Study.Status.READY
    if study.status == Study.Status.PREPARING and study.can_move_to(after):
        study.move_to(after)


@transaction.atomic
def fail_step(job: Job, error: BaseException | str) -> None:
    """Mark a step and its chain failed, skip the steps after it, and return the study to draft."""
    job.mark_failed(error)
    if job.parent_id is None:
        return
    parent = Job.objects.select_for_update().get(pk=job.parent_id)
    parent.mark_failed(f"{job.get_kind_display()} failed. {job.error}")
    parent.steps.filter(status=Job.Status.QUEUED).update(
        status=Job.Status.FAILED, error="Not run: an earlier step failed.", finished_at=timezone.now()
    )
    study = Study.objects.select_for_update().get(pk=parent.study_id)
    if study.status == Study.Status.PREPARING:
        study.move_to(Study.Status.DRAFT)


# --------------------------------------------------------------------------------------------
# Simulated annotators (not part of the Prepare chain; queued by `studies.services.start_simulation`)


@shared_task(bind=True, acks_late=True)
def simulate_annotators(self: Task, job_id: int) -> None:
    """Run a SIMULATE job: synthetic participants through the app at settings.SITE_URL over HTTP."""
    run_step(self, job_id, _simulate)


def _simulate(job: Job) -> dict[str, Any]:
    params = job.params or {}
    study, progress = study_of(job), reporter(job)
    check_question = question.watcher(study)  # the run holds the worker: check its question as it goes (#22)

    def on_progress(done: int, total: int, message: str) -> None:
        progress(done, total, message)
        check_question()

    report = simulated_annotators.simulate_annotators(
        study,
        annotators=int(params.get("annotators", 1)),
        base_url=params.get("base_url") or settings.SITE_URL,
        luce_temperature=params.get("luce_temperature"),
        seed=int(params.get("seed", 0)),
        on_progress=on_progress,
    )
    return report.as_dict()


# --------------------------------------------------------------------------------------------
# Imports too large for a web request (queued by `studies.services.start_import`)


@shared_task(bind=True, acks_late=True)
def import_prompts(self: Task, job_id: int) -> None:
    """Run an IMPORT_PROMPTS job: check every row of the uploaded file, then save all of them or none."""
    run_step(self, job_id, importing.run_import_job)


@shared_task(bind=True, acks_late=True)
def import_candidates(self: Task, job_id: int) -> None:
    """Run an IMPORT_CANDIDATES job (`studies.services.start_candidate_import`): check, then save all or none."""
    run_step(self, job_id, candidate_import.run_import_job)


IMPORT_TASKS: dict[str, Task] = {Job.Kind.IMPORT_PROMPTS: import_prompts, Job.Kind.IMPORT_CANDIDATES: import_candidates}


# --------------------------------------------------------------------------------------------
# The periodic sweep and allocation (celery beat: settings.CELERY_BEAT_SCHEDULE)


@shared_task(acks_late=True)
def sweep_abandoned() -> dict[str, int]:
    """Give seats and assignments back on time, in every live study: release assignments older
    than the study's `assignment_timeout`, and time out participants idle for longer.

    No job row: the sweep is idempotent (conditional updates; rows a pick is being saved on are
    skipped), so a duplicate or a missed run changes nothing but the timing. Paused and closed
    studies are left alone (a pause stops the clock; closing released everything).

    Each study is swept on its own (its own transaction, in `sweep_study`): one that fails is
    logged and skipped, so a bad row in one study never stops the seats of the others coming back.
    """
    results, failed = [], 0
    for study in Study.objects.filter(status=Study.Status.LIVE).order_by("pk"):
        try:
            results.append(participants.sweep_study(study=study))
        except Exception:  # logged with its traceback; the next study is swept all the same
            failed += 1
            logger.exception("sweep: study %s (%s) failed; the other studies are swept", study.pk, study.slug)
    total = participants.counts(results)
    if total.released or total.timed_out:
        logger.info("sweep: released %d assignments, timed out %d participants", total.released, total.timed_out)
    return {"studies": len(results), "failed": failed, "released": total.released, "timed_out": total.timed_out}


@shared_task(acks_late=True)
def allocate_judgments() -> dict[str, int]:
    """Rewrite the item priorities of every live study with adaptive allocation on, and record each
    run (`studies.allocation`, issue #22; celery beat, every UALIGN_ALLOCATION_SECONDS).

    Like the sweep: no job row (a duplicate or missed run changes only the timing), and each study
    on its own, so one that fails is logged and the others are allocated all the same. A live study
    whose allocation was turned off gets its items' priorities back to 0 (logged; nothing decided).
    """
    done, failed = 0, 0
    for study in allocation.allocated_studies():
        try:
            allocation.allocate_study(study)
            done += 1
        except Exception:  # logged with its traceback; the next study is allocated all the same
            failed += 1
            logger.exception("allocation: study %s (%s) failed; the other studies are allocated", study.pk, study.slug)
    for study in allocation.studies_to_reset():
        if reset := allocation.reset_priorities(study):
            logger.info("allocation: study %s (%s) has it off; %d items back to priority 0", study.pk, study.slug, reset)
    return {"studies": done, "failed": failed}


# --------------------------------------------------------------------------------------------
# The pre-registered questions' stopping rule (celery beat, every UALIGN_QUESTION_SECONDS; issue #22)


@shared_task(acks_late=True)
def check_questions() -> dict[str, int]:
    """Answer every live study's pre-registered question from its judgments; record each newly answered one
    and pause its study when the question says so (`studies.estimate.question.record_if_answered`).

    Outside the pick's path: the pick never reads the question. Idempotent (a question is recorded once, by a
    conditional update under the study's lock), so a duplicate or missed run changes only the timing. One
    study's failure is logged and the others are checked all the same.
    """
    answered = paused = failed = checked = 0
    pending = StudyQuestion.objects.filter(answered_at__isnull=True, study__status=Study.Status.LIVE)
    for question_id, slug in pending.order_by("pk").values_list("pk", "study__slug"):
        checked += 1
        try:
            recorded = question.record_if_answered(question_id)
        except Exception:  # logged with its traceback; the next study is checked all the same
            failed += 1
            logger.exception("check_questions: the question of study %s failed; the others are checked", slug)
            continue
        if recorded is not None:  # logged by record_if_answered
            answered += 1
            paused += recorded.paused_study
    return {"checked": checked, "answered": answered, "paused": paused, "failed": failed}


# --------------------------------------------------------------------------------------------
# Results too large to compute in a web request (queued by `studies.services.results_for_page`)


@shared_task(acks_late=True)
def refresh_results(study_id: int, origin: str) -> None:
    """Recompute a study's results for one origin and keep them as its snapshot (issue #14)."""
    study = Study.objects.filter(pk=study_id).first()
    if study is not None:
        results_cache.compute_and_store(study, origin)

