"""Celery tasks: thin wrappers that claim a Job row, call plain functions and persist.

Tasks take ids only (JSON), claim their row with a conditional UPDATE so a re-delivered
task does nothing twice, and record failures on the row. Heavy imports (torch) happen
inside the functions they need, never at import time: the web process imports this module.

The "Prepare" chain (`studies.services.prepare_study`) is four step jobs under one parent:

    generate_candidates (gpu)  →  build_populations (gpu)  →  fit_policies  →  build_items

Each step, when done, enqueues the next on commit (`studies.services.finish_step`); the last
moves the study to ready. A failure marks the step and the chain failed and returns the study
to draft (`studies.services.fail_step`); pressing Prepare again continues from what is saved.

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

from celery import shared_task
from django.db import connection
from django.utils import timezone

from studies.models import Job

logger = logging.getLogger(__name__)

# A duplicate delivery checks back this often (at most) while the original runs.
DEFER_RETRIES = 1000


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


def _claim_or_defer(task, job_id: int) -> Job | None:
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
    from studies import services

    services.fail_step(
        current, f"Gave up after {current.attempts} attempts: the worker running this job stopped each time."
    )
    return None


def run_step(task, job_id: int, body: Callable[[Job], dict]) -> None:
    """Claim → run `body(job)` with a heartbeat → finish the step, or fail the chain."""
    from studies import services

    job = _claim_or_defer(task, job_id)
    if job is None:
        return
    try:
        with heartbeat(job):
            result = body(job)
    except Exception as exc:
        logger.exception("job %s (%s) failed", job.pk, job.kind)
        services.fail_step(job, exc)
        raise
    services.finish_step(job, result)


def report(job: Job, done: float, total: float, message: str) -> None:
    """Progress of a step, mirrored on its parent's bar (each step is an equal share)."""
    fraction = done / total if total else 1.0
    job.report_progress(fraction, message)
    if job.parent_id:
        step, steps = job.params.get("step", 0), job.params.get("steps", 1)
        Job.objects.get(pk=job.parent_id).report_progress((step + fraction) / steps, message)


# --------------------------------------------------------------------------------------------
# The steps


@shared_task(bind=True, acks_late=True)
def generate_candidates(self, job_id: int) -> None:
    """Sample every prompt's pool (and checkpoint/doctor candidates); one prompt per transaction."""
    run_step(self, job_id, _generate)


def _generate(job: Job) -> dict:
    from studies import pipeline

    study = job.study
    targets = pipeline.generation_targets(study)
    prompts = list(study.prompts.order_by("id"))
    total, done, generated, skipped, tokens, seconds = len(targets) * len(prompts), 0, 0, 0, 0, 0.0
    record: dict = {}
    for target in targets:
        for i, prompt in enumerate(prompts):
            report(job, done, total, f"Generating with {target.generator.name}: prompt {i + 1} of {len(prompts)}")
            pool = pipeline.generate_prompt_pool(prompt, target, n=study.pool_size)
            done += 1
            if pool["skipped"]:
                skipped += 1
                continue
            generated += 1
            tokens += pool["tokens"]
            seconds += pool["seconds"]
            record.setdefault(target.generator.name, {k: v for k, v in pool.items() if k not in ("tokens", "seconds", "distinct", "skipped")})
    return {
        "pools_generated": generated,
        "pools_skipped": skipped,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 2) if seconds else None,
        "generation": record,
    }


@shared_task(bind=True, acks_late=True)
def build_populations(self, job_id: int) -> None:
    """Turn each prompt's candidates into utilities U (T × N) from the study's preference sources."""
    run_step(self, job_id, _populate)


def _populate(job: Job) -> dict:
    from studies import pipeline

    study = job.study
    sources = list(study.preference_sources.order_by("id"))
    prompts = list(study.prompts.order_by("id"))
    types = 0
    for i, prompt in enumerate(prompts):
        report(job, i, len(prompts), f"Population for prompt {i + 1} of {len(prompts)}")
        matrix = pipeline.build_population(prompt, sources)
        types = len(matrix.weights)
    return {"prompts": len(prompts), "types": types, "sources": [s.kind for s in sources]}


@shared_task(bind=True, acks_late=True)
def fit_policies(self, job_id: int) -> None:
    """Fit every policy at every k of the study on every prompt."""
    run_step(self, job_id, _fit)


def _fit(job: Job) -> dict:
    from studies import pipeline

    study = job.study
    policies = list(study.policies.order_by("id"))
    prompts = list(study.prompts.order_by("id"))
    fits = 0
    for i, prompt in enumerate(prompts):
        report(job, i, len(prompts), f"Fitting policies for prompt {i + 1} of {len(prompts)}")
        fits += pipeline.fit_prompt_policies(prompt, policies, study.k_values)
    not_converged = study.policies.filter(fits__converged=False).values_list("name", flat=True).distinct()
    return {"fits": fits, "not_converged": sorted(not_converged)}


@shared_task(bind=True, acks_late=True)
def build_items(self, job_id: int) -> None:
    """Assemble the blinded comparison items (and attention checks) of every prompt."""
    run_step(self, job_id, _build_items)


def _build_items(job: Job) -> dict:
    from studies import pipeline

    study = job.study
    policies = list(study.policies.order_by("id"))
    prompts = list(study.prompts.order_by("id"))
    populations = {p.pk: pipeline.load_population(p) for p in prompts}
    drafts = {p.pk: pipeline.draft_prompt_items(p, policies, populations[p.pk]) for p in prompts}
    n_checks = pipeline.attention_check_count(study, sum(pipeline.judged_count(d) for d in drafts.values()))
    counts = pipeline.ItemCounts()
    for i, prompt in enumerate(prompts):
        report(job, i, len(prompts), f"Building items for prompt {i + 1} of {len(prompts)}")
        checks = n_checks // len(prompts) + (i < n_checks % len(prompts))
        attention = pipeline.draft_attention_items(prompt, checks, populations[prompt.pk])
        counts.add(pipeline.save_prompt_items(prompt, drafts[prompt.pk] + attention))
    return {
        "items": study.items.filter(is_attention_check=False).count(),
        "decided_items": study.items.filter(is_attention_check=False, needs_judgment=False).count(),
        "attention_checks": study.items.filter(is_attention_check=True).count(),
        **counts.__dict__,
    }


STEP_TASKS = {
    Job.Kind.GENERATE: generate_candidates,
    Job.Kind.POPULATE: build_populations,
    Job.Kind.FIT: fit_policies,
    Job.Kind.BUILD_ITEMS: build_items,
}


# --------------------------------------------------------------------------------------------
# Simulated annotators (not part of the Prepare chain)


@shared_task(bind=True, acks_late=True)
def simulate_annotators(self, job_id: int) -> None:
    """Run a SIMULATE job: synthetic participants through the app at settings.SITE_URL over HTTP."""
    run_step(self, job_id, _simulate)


def _simulate(job: Job) -> dict:
    from django.conf import settings

    from studies import simulate

    params = job.params or {}
    report_ = simulate.simulate_annotators(
        job.study,
        annotators=int(params.get("annotators", 1)),
        base_url=params.get("base_url") or settings.SITE_URL,
        luce_temperature=params.get("luce_temperature"),
        seed=int(params.get("seed", 0)),
        on_progress=lambda done, total, message: report(job, done, total, message),
    )
    return report_.as_dict()


# --------------------------------------------------------------------------------------------
# Prompt imports too large for a web request (studies.importing.start_prompt_import)


@shared_task(bind=True, acks_late=True)
def import_prompts(self, job_id: int) -> None:
    """Run an IMPORT_PROMPTS job: check every row of the uploaded file, then save all of them or none."""
    run_step(self, job_id, _import_prompts)


def _import_prompts(job: Job) -> dict:
    from studies.importing import run_import_job

    return run_import_job(job)
