"""Workflows that check a study's setup and launch its background work.

`preparation_problems` is the one place that says whether a study can be prepared: it asks
each step for the rules of its own inputs (`studies.steps.fit.policy_params_problems`,
`studies.steps.preference_sources.source_problems`) and adds the rules across them.

`prepare_study` is what the admin's Prepare button calls. It checks the configuration,
moves the study to preparing, creates a parent job and its step jobs (`pipeline`), and enqueues
the first step after the transaction commits. The tasks (`studies.tasks`) hand the chain on
(`finish_step` / `fail_step`), moving the study to ready or back to draft.
`start_simulation` queues simulated annotators for a worker; `start_pilot` does it on a fresh
pilot copy of the study (`studies.pilots`), so a pilot spends none of the real study's quota.

Imports point one way: views, admin and commands → services → tasks → steps → `workers`.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from studies import pilots, tasks
from studies.candidate_import import imported_candidates
from studies.models import Job, Policy, Study
from studies.pilots import (
    PilotError as PilotError,  # re-exported for views and commands
)
from studies.simulated_annotators import SimulationError, annotators_to_fill
from studies.steps.doctor import (
    doctor_policy_problems,
    ensure_doctor_generators,
    needs_pool_population,
)
from studies.steps.fit import policy_params_problems
from studies.steps.pool import decoding_params, generation_targets
from studies.steps.preference_sources import source_problems
from workers.generation import generation_metadata

PIPELINE = [Job.Kind.GENERATE, Job.Kind.POPULATE, Job.Kind.FIT, Job.Kind.BUILD_ITEMS]


def pipeline(study: Study) -> list[tuple[str, dict[str, Any]]]:
    """The chain's steps (kind, params) for this study.

    With doctor policies, the doctors learn from pairs on the pool's population and guide
    sampling of their own candidates, which then need their population too:
    generate (pool) → [populate] → train doctors → generate (doctors) → populate → fit → items.
    The first populate is left out when no doctor learns from the population. Every step skips
    what is saved (pools, trained doctors), so pressing Prepare again redoes only what is missing.
    """
    if not study.policies.filter(kind=Policy.Kind.DOCTOR).exists():
        return [(kind, {}) for kind in PIPELINE]
    steps: list[tuple[str, dict[str, Any]]] = [(Job.Kind.GENERATE, {"doctors": False})]
    if needs_pool_population(study):
        steps.append((Job.Kind.POPULATE, {}))
    steps += [(Job.Kind.TRAIN_DOCTORS, {}), (Job.Kind.GENERATE, {"doctors": True}), (Job.Kind.POPULATE, {}),
              (Job.Kind.FIT, {}), (Job.Kind.BUILD_ITEMS, {})]
    return steps


class PreparationError(Exception):
    """The study can't be prepared as configured; `problems` are readable sentences."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(" ".join(problems))


def pool_problems(study: Study) -> list[str]:
    """What the pool step needs: prompts, and a generator or imported candidates for every prompt
    (`studies.candidate_import`), plus the own generators of checkpoint and doctor policies."""
    problems = []
    prompts = study.prompts.all()
    if not prompts.exists():
        problems.append("Import at least one prompt.")
    imported = set(imported_candidates(study).values_list("prompt_id", flat=True).distinct())
    if study.generator_id is None and not imported:
        problems.append("Choose a generator model for the candidate pool, or import candidates for every prompt.")
    elif study.generator_id is None:
        missing = list(prompts.exclude(pk__in=imported).values_list("external_id", "pk")[:6])
        if missing:
            names = ", ".join(key or str(pk) for key, pk in missing[:5]) + (", …" if len(missing) > 5 else "")
            problems.append(f"Import candidates for every prompt, or choose a generator: these have none: {names}.")
    elif imported:
        problems.append(f"The study has imported candidates and the generator “{study.generator}”: clear the "
                        "generator to prepare from the imported candidates.")
    return problems + _own_generator_problems(study, list(study.policies.select_related("generator")))


def _own_generator_problems(study: Study, policies: list[Policy]) -> list[str]:
    problems = []
    own: dict[int, Policy] = {}
    for policy in policies:
        if policy.kind == Policy.Kind.DOCTOR:
            if study.generator_id is None:
                problems.append(f"Doctor policy “{policy.name}” guides the study's generator (its patient): choose one.")
            problems += doctor_policy_problems(study, policy)
        if policy.kind in (Policy.Kind.CHECKPOINT, Policy.Kind.DOCTOR):
            if policy.generator_id is None:
                if policy.kind == Policy.Kind.CHECKPOINT:
                    problems.append(f"Policy “{policy.name}” ({policy.get_kind_display()}) needs its own generator.")
                continue
            other = own.setdefault(policy.generator_id, policy)
            if other is not policy and Policy.Kind.DOCTOR in (policy.kind, other.kind):
                problems.append(f"Policies “{other.name}” and “{policy.name}” can't share the generator “{policy.generator}”.")
    return problems


def preparation_problems(study: Study) -> list[str]:
    """What must be fixed before Prepare can run (empty when the study is ready to prepare)."""
    problems = pool_problems(study)
    if not study.k_values:
        problems.append("Set the k values, for example [1, 2, 4].")
    policies = list(study.policies.all())
    if not policies:
        problems.append("Add at least one policy.")
    for policy in policies:
        problems += policy_params_problems(policy)
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
    ensure_doctor_generators(study)
    parent = Job.objects.create(study=study, kind=Job.Kind.PREPARE, params=_launch_record(study))
    chain = pipeline(study)
    steps = [
        Job.objects.create(study=study, parent=parent, kind=kind, params={**params, "step": i, "steps": len(chain)})
        for i, (kind, params) in enumerate(chain)
    ]
    tasks.enqueue_step(steps[0])
    return parent


@transaction.atomic
def generate_only(*, study: Study) -> Job:
    """Run only the pool step of a draft study (sample its candidates) and leave it a draft.

    For a utilities CSV, which names candidates by id: generate, upload the CSV, then one press
    of Prepare (whose pool step finds the pools saved and skips them) runs the rest.
    """
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status != Study.Status.DRAFT:
        raise PreparationError([f"“{study}” is {study.get_status_display().lower()}: "
                                "Generate only runs on a draft study."])
    problems = pool_problems(study)
    if study.generator_id is None:
        problems.insert(0, "Generate only samples with the study's generator: choose one.")
    if problems:
        raise PreparationError(problems)
    study.move_to(Study.Status.PREPARING)
    parent = Job.objects.create(study=study, kind=Job.Kind.PREPARE,
                                params={**_launch_record(study), "only": Job.Kind.GENERATE})
    step = Job.objects.create(study=study, parent=parent, kind=Job.Kind.GENERATE, params={"step": 0, "steps": 1})
    tasks.enqueue_step(step)
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
                "guided": t.doctor_policy is not None,
                **generation_metadata(t.sampler.model_ref, **decoding_params(t.generator)),
                "revision": t.sampler.revision,
                "gguf_file": t.sampler.gguf_file,
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
def start_pilot(*, study: Study, annotators: int | None = None, luce_temperature: float | None = None) -> Job:
    """Copy the study as a live pilot (`studies.pilots.create_pilot`) and queue simulated annotators
    on the copy; returns their job (its `study` is the pilot). Raises PilotError or SimulationError."""
    pilot = pilots.create_pilot(study)
    return start_simulation(study=pilot, annotators=annotators, luce_temperature=luce_temperature)


def create_pilot(*, study: Study) -> Study:
    """A live pilot copy of the study (`studies.pilots.create_pilot`); raises PilotError."""
    return pilots.create_pilot(study)


def delete_pilot(*, pilot: Study) -> None:
    """Delete a pilot copy with its participants and judgments (`studies.pilots.delete_pilot`)."""
    pilots.delete_pilot(pilot)


@transaction.atomic
def start_prompt_import(*, study: Study, filename: str, data: bytes) -> Job:
    """Queue an import for a worker (large files): the upload travels in the job row."""
    job = Job.objects.create(study=study, kind=Job.Kind.IMPORT_PROMPTS, params={"filename": filename[:200]},
                             payload=data)
    tasks.import_prompts.delay_on_commit(job.pk)
    return job
