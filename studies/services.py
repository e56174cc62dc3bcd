"""Workflows across models: preparing a study (the candidate pipeline) and its job chain.

`prepare_study` is what the admin's Prepare button calls. It checks the configuration,
moves the study to preparing, creates a parent job and its four step jobs, and enqueues
the first step after the transaction commits. The worker tasks (`workers.tasks`) call
`finish_step` / `fail_step`, which move the chain along and the study to ready or back to
draft.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from studies.models import Job, Policy, Study

PIPELINE = [Job.Kind.GENERATE, Job.Kind.POPULATE, Job.Kind.FIT, Job.Kind.BUILD_ITEMS]


class PreparationError(Exception):
    """The study can't be prepared as configured; `problems` are readable sentences."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(" ".join(problems))


def preparation_problems(study: Study) -> list[str]:
    """What must be fixed before Prepare can run (empty when the study is ready to prepare)."""
    from studies.pipeline import policy_params_problems
    from studies.sources import source_problems

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
    own = {}
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


def _enqueue(step: Job) -> None:
    from workers.tasks import STEP_TASKS

    STEP_TASKS[step.kind].delay_on_commit(step.pk)


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
        if step is not None and not step.is_finished:
            _enqueue(step)
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
    _enqueue(steps[0])
    return parent


def _launch_record(study: Study) -> dict:
    """What the run depends on, recorded at launch (house style C.9)."""
    from studies.pipeline import decoding_params, generation_targets
    from workers.generation import generation_metadata

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
def finish_step(job: Job, result: dict) -> None:
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
        _enqueue(following[0])
        return
    parent.mark_done({s.kind: s.result for s in steps})
    study = Study.objects.select_for_update().get(pk=parent.study_id)
    if study.can_move_to(Study.Status.READY) and study.status == Study.Status.PREPARING:
        study.move_to(Study.Status.READY)


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

