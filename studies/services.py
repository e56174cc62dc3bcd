"""Workflows that check a study's setup and launch its background work.

`preparation_problems` is the one place that says whether a study can be prepared: it asks
each step for the rules of its own inputs (`studies.steps.fit.policy_params_problems`,
`studies.steps.preference_sources.source_problems`) and adds the rules across them.

`prepare_study` is what the admin's Prepare button calls. It checks the configuration,
moves the study to preparing, creates a parent job and its four step jobs, and enqueues
the first step after the transaction commits. The tasks (`studies.tasks`) hand the chain on
(`finish_step` / `fail_step`), moving the study to ready or back to draft.
`start_simulation` queues simulated annotators for a worker. `results_for_page` serves the results
page from its snapshot and queues a recomputation when a large study's snapshot is out of date
(`studies.results_cache`).

Imports point one way: views, admin and commands → services → tasks → steps → `workers`.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from studies import results_cache, tasks
from studies.models import Job, Policy, Study
from studies.simulated_annotators import SimulationError, annotators_to_fill
from studies.steps.fit import policy_params_problems
from studies.steps.pool import decoding_params, generation_targets
from studies.steps.preference_sources import source_problems
from workers.generation import generation_metadata

PIPELINE = [Job.Kind.GENERATE, Job.Kind.POPULATE, Job.Kind.FIT, Job.Kind.BUILD_ITEMS]


class PreparationError(Exception):
    """The study can't be prepared as configured; `problems` are readable sentences."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(" ".join(problems))


def preparation_problems(study: Study) -> list[str]:
    """What must be fixed before Prepare can run (empty when the study is ready to prepare)."""
    problems = []
    if study.generator_id is None:
        problems.append("Choose a generator model for the candidate pool.")
    if not study.prompts.exists():
        problems.append("Import at least one prompt.")
    if not study.k_values:
        problems.append("Set the k values, for example [1, 2, 4].")
    policies = list(study.policies.select_related("generator"))
    if not policies:
        problems.append("Add at least one policy.")
    own: dict[int, Policy] = {}
    for policy in policies:
        problems += policy_params_problems(policy)
        if policy.kind in (Policy.Kind.CHECKPOINT, Policy.Kind.DOCTOR):
            if policy.generator_id is None:
                problems.append(f"Policy “{policy.name}” ({policy.get_kind_display()}) needs its own generator.")
                continue
            if policy.kind == Policy.Kind.DOCTOR and policy.generator_id == study.generator_id:
                problems.append(f"Doctor policy “{policy.name}” needs a doctor model other than the study's generator.")
            other = own.setdefault(policy.generator_id, policy)
            if other is not policy and Policy.Kind.DOCTOR in (policy.kind, other.kind):
                problems.append(f"Policies “{other.name}” and “{policy.name}” can't share the generator “{policy.generator}”.")
    sources = list(study.preference_sources.all())
    if not sources:
        problems.append("Add at least one preference source (persona judges, embeddings, reward model or CSV).")
    for source in sources:
        problems += [f"Preference source {source.pk} ({source.get_kind_display()}): {p}" for p in source_problems(source)]
    return problems


def _latest_chain(study: Study) -> Job | None:
    return Job.objects.filter(study=study, kind=Job.Kind.PREPARE).order_by("-created_at", "-id").first()


@transaction.atomic
def prepare_study(*, study: Study) -> Job:
    """Start (or resume) the candidate pipeline of a study; returns the chain's parent job.

    A draft or ready study gets a new chain; work already saved (candidates, populations,
    fits, items) is kept and reused, so pressing Prepare again after a failure redoes only
    what is missing. A study already preparing has its current step enqueued again, which
    is harmless (the job's claim makes duplicates no-ops) and revives a chain whose message
    was lost.
    """
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status == Study.Status.PREPARING:
        parent = _latest_chain(study)
        step = parent and parent.steps.exclude(status=Job.Status.DONE).order_by("id").first()
        if parent is not None and step is not None and not step.is_finished:
            tasks.enqueue_step(step)
            return parent
    problems = preparation_problems(study)
    if problems:
        raise PreparationError(problems)
    study.move_to(Study.Status.PREPARING)
    parent = Job.objects.create(study=study, kind=Job.Kind.PREPARE, params=_launch_record(study))
    steps = [
        Job.objects.create(study=study, parent=parent, kind=kind, params={"step": i, "steps": len(PIPELINE)})
        for i, kind in enumerate(PIPELINE)
    ]
    tasks.enqueue_step(steps[0])
    return parent


def _launch_record(study: Study) -> dict[str, Any]:
    """What the run depends on, recorded at launch (house style C.9)."""
    return {
        "study_seed": study.seed,
        "pool_size": study.pool_size,
        "k_values": study.k_values,
        "m": study.opponent_outputs,
        "replicates": study.replicates,
        "attention_check_rate": study.attention_check_rate,
        "generators": [
            {
                "name": t.generator.name,
                "guided": t.guide_beta is not None,
                **generation_metadata(
                    (t.patient or t.generator).model_ref,
                    **decoding_params(t.patient or t.generator) | {"seed": t.generator.seed},
                ),
                "revision": (t.patient or t.generator).revision,
                "gguf_file": (t.patient or t.generator).gguf_file,
            }
            for t in generation_targets(study)
        ],
        "policies": [{"name": p.name, "kind": p.kind, "params": p.params} for p in study.policies.order_by("id")],
        "sources": [
            {"kind": s.kind, "weight": s.weight, "params": s.params} for s in study.preference_sources.order_by("id")
        ],
    }


@transaction.atomic
def start_simulation(*, study: Study, annotators: int | None = None, luce_temperature: float | None = None,
                     seed: int | None = None) -> Job:
    """Queue a SIMULATE job for the worker, which runs the annotators against settings.SITE_URL."""
    if study.status != Study.Status.LIVE:
        raise SimulationError(f"“{study}” is {study.get_status_display().lower()}: make it live first "
                              "(annotators, real or simulated, can only join a live study).")
    if luce_temperature is not None and not luce_temperature > 0:
        raise SimulationError("the Luce temperature must be positive")
    params = {
        "annotators": annotators or annotators_to_fill(study),
        "luce_temperature": luce_temperature,
        "seed": study.seed if seed is None else seed,
    }
    job = Job.objects.create(study=study, kind=Job.Kind.SIMULATE, params=params)
    tasks.simulate_annotators.delay_on_commit(job.pk)
    return job


@transaction.atomic
def start_prompt_import(*, study: Study, filename: str, data: bytes) -> Job:
    """Queue an import for a worker (large files): the upload travels in the job row."""
    job = Job.objects.create(study=study, kind=Job.Kind.IMPORT_PROMPTS, params={"filename": filename[:200]},
                             payload=data)
    tasks.import_prompts.delay_on_commit(job.pk)
    return job


def results_for_page(study: Study, origin: str) -> results_cache.CachedResults:
    """The results the page (and its poll, and the plot) show: the current snapshot; else, for a
    small study, results computed now; else the last snapshot, with a recomputation queued."""
    snapshot, current = results_cache.current_snapshot(study, origin)
    if current:
        return results_cache.cached(snapshot, study, origin, current=True)
    if results_cache.small_enough_to_compute_now(study, origin):
        return results_cache.compute_and_store(study, origin)
    if results_cache.claim_refresh(study, origin):
        tasks.refresh_results.delay_on_commit(study.pk, origin)
    return results_cache.cached(snapshot, study, origin, current=False)

