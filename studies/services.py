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
`results_for_page` serves the results page from its snapshot and queues a recomputation when a
large study's snapshot is out of date (`studies.estimate.results_cache`).

`change_study_status` is the one place that checks the researcher's moves of a study's
lifecycle (go live, pause, resume, close; the admin's buttons call it), and
`copy_study_as_draft` starts a new draft from a study whose design is fixed.

Imports point one way (docs/architecture.md, tests/test_import_layers.py): web and admin →
workflows (this module → tasks → the simulated annotators and pilots, never back) → steps,
judgment, estimate → models → `workers`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from studies import pilots, tasks
from studies.candidate_import import imported_candidates
from studies.candidate_import import study_problems as candidate_study_problems
from studies.estimate import plans, results_cache
from studies.judgment import participants
from studies.models import Job, Policy, PreferenceSource, Prompt, Study
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
from studies.steps.pool import generators_record
from studies.steps.preference_sources import source_problems

logger = logging.getLogger(__name__)

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


class DesignFixed(Exception):
    """The study's design can no longer change (`Study.design_fixed_message` says why)."""


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
    problems += study.screening_problems()
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
        "generators": generators_record(study),
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
    tasks.send(tasks.simulate_annotators, job)
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


class ImportBusy(Exception):
    """Another import of the study is queued or running (one at a time: issue #24)."""


IMPORT_BUSY = ("Another import into this study is queued or running: wait for it to finish (or, if its worker "
               "stopped, retry it from its page), then upload again.")


def start_prompt_import(*, study: Study, filename: str, data: bytes) -> Job:
    """Queue a prompt import for a worker (large files). Raises DesignFixed when the study is no
    longer a draft (`Study.design_fixed_message`), ImportBusy when another import is active."""
    return start_import(study=study, kind=Job.Kind.IMPORT_PROMPTS, filename=filename, data=data)


def start_candidate_import(*, study: Study, filename: str, data: bytes) -> Job:
    """Queue a candidate import for a worker (large files); raises DesignFixed or ImportBusy."""
    return start_import(study=study, kind=Job.Kind.IMPORT_CANDIDATES, filename=filename, data=data)


@transaction.atomic
def start_import(*, study: Study, kind: str, filename: str, data: bytes) -> Job:
    """Queue an import job (the upload travels in its row) under the study's lock.

    The database holds at most one active import per study (`job_one_active_import_per_study`),
    so a second upload while one runs, or while a crashed one awaits redelivery, is refused
    instead of importing the same rows twice.
    """
    locked = Study.objects.select_for_update().get(pk=study.pk)
    problems = ([locked.design_fixed_message()] if kind == Job.Kind.IMPORT_PROMPTS
                else candidate_study_problems(locked))
    if any(problems):
        raise DesignFixed(" ".join(p for p in problems if p))
    try:
        with transaction.atomic():
            job = Job.objects.create(study=study, kind=kind, params={"filename": filename[:200]}, payload=data)
    except IntegrityError:
        raise ImportBusy(IMPORT_BUSY) from None
    tasks.send(tasks.IMPORT_TASKS[kind], job)
    return job


class NotStale(Exception):
    """The job is not a running job whose worker stopped, so there is nothing to retry."""


@transaction.atomic
def retry_stale_import(*, job: Job) -> Job:
    """Queue again an import whose worker stopped (`Job.is_stale`): its upload is still in its row.

    A conditional UPDATE, so two presses (or a redelivery racing the press) queue it once; a
    message of the old run that arrives later finds it claimed or finished and does nothing.
    """
    stale_before = timezone.now() - Job.stale_after()
    moved = Job.objects.filter(
        pk=job.pk, kind__in=list(tasks.IMPORT_TASKS), status=Job.Status.RUNNING, heartbeat_at__lt=stale_before,
    ).update(status=Job.Status.QUEUED, heartbeat_at=None, progress=0.0,
             progress_message="Queued again after its worker stopped")
    if moved != 1:
        raise NotStale("This import is not stalled: it is running, queued or finished.")
    job.refresh_from_db()
    tasks.send(tasks.IMPORT_TASKS[job.kind], job)
    return job


# --- The lifecycle: live ⇄ paused → closed ---------------------------------------------------------


class LifecycleError(Exception):
    """The study can't make this move; the message says why, in a sentence."""


@dataclass(frozen=True)
class LifecycleAction:
    """A move the researcher makes on the study's admin page, with what the confirmation says."""

    name: str  # in the URL
    target: str  # a Study.Status
    label: str  # the button
    explanation: str  # the confirmation page


LIFECYCLE_ACTIONS = {
    action.name: action
    for action in [
        LifecycleAction("go-live", Study.Status.LIVE, "Go live",
                        "Annotators with the study's link can join and start annotating."),
        LifecycleAction("pause", Study.Status.PAUSED, "Pause",
                        "Nobody new can join. Participants in the middle of the study finish the task they "
                        "have open, then see a page saying the study is paused; they continue when you resume. "
                        "Nobody times out while it is paused."),
        LifecycleAction("resume", Study.Status.LIVE, "Resume",
                        "The study takes participants again; those who were waiting continue where they were."),
        LifecycleAction("close", Study.Status.CLOSED, "Close",
                        "Closing is final. Nobody can join or start a new task. Every participant who made at "
                        "least one pick is given the completion code, now or when they come back."),
    ]
}


def lifecycle_actions(study: Study) -> list[LifecycleAction]:
    """The moves the study's status allows now, in the order the admin shows them."""
    allowed = [a for a in LIFECYCLE_ACTIONS.values() if study.can_move_to(a.target)]
    # Resume is the way back from a pause; "go live" names the first time.
    paused = study.status == Study.Status.PAUSED
    return [a for a in allowed if a.name != ("go-live" if paused else "resume")]


def lifecycle_problem(study: Study, action: str) -> str:
    """Why the study can't make this move now, or "" when it can (the rules of `change_study_status`)."""
    move = LIFECYCLE_ACTIONS.get(action)
    if move is None:
        return f"There is no move called “{action}”."
    if move not in lifecycle_actions(study):
        if study.status == Study.Status.CLOSED:
            return f"“{study}” is closed, and closing is final: copy it as a new draft study to run it again."
        return f"“{study}” is {study.get_status_display().lower()}, so it can't {move.label.lower()} now."
    if move.target == Study.Status.LIVE:
        return " ".join(preflight_problems(study)[0])
    return ""


def preflight_problems(study: Study) -> tuple[list[str], list[str]]:
    """What to fix before a study goes live: (blocking, warnings), each a list of sentences.

    Blocking (going live is refused): no comparison items to judge, no consent text, neither a
    completion code nor a completion URL (a participant could never prove they finished).
    Warnings (shown on the confirmation, the researcher decides): the places don't give the
    judgments the design needs, or no places are set (`plans.design_fit`); prompts without a
    comparison item (they add nothing to the results); no completion URL (participants copy
    the code by hand). The places are a warning, not a refusal: a study may be run in waves,
    raising the places between them.
    """
    blocking: list[str] = []
    warnings: list[str] = []
    if not study.items.filter(needs_judgment=True, is_attention_check=False).exists():
        blocking.append(f"“{study}” has no comparison items to judge yet: press Prepare first.")
    else:
        bare = study.prompts.exclude(items__is_attention_check=False).order_by("id")
        if bare.exists():
            count = bare.count()
            names = ", ".join(f"#{p.pk}" for p in bare[:5]) + (" …" if count > 5 else "")
            warnings.append(f"{count} prompt(s) have no comparison items ({names}), so they add nothing to the "
                            "results: check their candidates and populations on the Jobs page, or delete them.")
    if not study.consent_text.strip():
        blocking.append("The study has no consent text: write the consent form annotators must accept.")
    has_code = bool(study.completion_code.strip()) or study.per_participant_codes
    if not has_code and not study.completion_redirect_url:
        blocking.append("The study has neither a completion code nor a completion URL: set at least one, or "
                        "participants can't show that they finished.")
    elif not study.completion_redirect_url:
        warnings.append("The study has no completion URL: participants are shown the completion code and must "
                        "copy it into the recruiting platform themselves.")
    fit = plans.design_fit(study)
    if fit is not None and not fit.fits:
        warnings.append(fit.sentence)
    return blocking, warnings


@transaction.atomic
def change_study_status(*, study: Study, action: str) -> Study:
    """Make one of the researcher's lifecycle moves (LIFECYCLE_ACTIONS), checking every rule.

    - a study goes live (or resumes) only when it has comparison items that need judging;
    - closing is final: a closed study moves nowhere;
    - on resume, the participants' idle clocks restart (a pause times nobody out);
    - on close, everyone with at least one pick completes and gets the code, and open
      assignments are released (`participants.close_out_study`).
    Raises LifecycleError with a readable reason.
    """
    study = Study.objects.select_for_update().get(pk=study.pk)
    problem = lifecycle_problem(study, action)
    if problem:
        raise LifecycleError(problem)
    move = LIFECYCLE_ACTIONS[action]
    now = timezone.now()
    was = study.status
    study.move_to(move.target)
    if was == Study.Status.PAUSED and move.target == Study.Status.LIVE:
        participants.restart_clocks(study=study, now=now)
    if move.target == Study.Status.CLOSED:
        participants.close_out_study(study=study, now=now)
    return study


# --- Copy as a new draft ---------------------------------------------------------------------------

COPY_EXPLANATION = (
    "A new draft study gets this study's settings, policies, preference sources, prompts and pre-registered "
    "question (not yet answered), so you can change its design and prepare it afresh. Not copied: candidates, populations, fits, comparison items, participants "
    "and judgments; the invite token and completion code (the copy gets new ones) and the completion URL (set the "
    "copy's own); and the data of CSV preference sources, which name this study's candidates (upload them again "
    "once the copy's candidates exist). This study stays as it is."
)

# Study fields that are not copied: identity, state, secrets, and what belongs to one Prolific study.
NOT_COPIED = {"id", "slug", "title", "status", "invite_token", "completion_code", "completion_redirect_url",
              "code_secret", "created_at", "updated_at"}


def _free_slug(slug: str) -> str:
    base = f"{slug[:50]}-copy"
    candidate, n = base, 1
    while Study.objects.filter(slug=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


@transaction.atomic
def copy_study_as_draft(*, study: Study) -> Study:
    """A new draft study with this one's settings, policies, preference sources, prompts and
    pre-registered question (unanswered, editable: the copy is a draft).

    Not copied: candidates, populations, fits, items, participants and judgments (the copy is
    prepared afresh); the invite token and completion code (new ones: it is another study for
    annotators); the completion URL (it belongs to one Prolific study); and the data of CSV
    preference sources, which name the original's candidates by id (upload them again once
    the copy's candidates exist).
    """
    fields = {f.attname: getattr(study, f.attname) for f in Study._meta.concrete_fields if f.name not in NOT_COPIED}
    copy = Study.objects.create(**fields, slug=_free_slug(study.slug), title=f"{study.title} (copy)"[:200])
    originals = list(study.policies.order_by("id"))
    copies = Policy.objects.bulk_create([
        Policy(study=copy, name=p.name, kind=p.kind, params=p.params, generator_id=p.generator_id) for p in originals
    ])
    pilots.copy_question(study, copy, {p.pk: c for p, c in zip(originals, copies, strict=True)})
    PreferenceSource.objects.bulk_create([
        PreferenceSource(study=copy, kind=s.kind, params=s.params, weight=s.weight,
                         data="" if s.kind == PreferenceSource.Kind.CSV else s.data)
        for s in study.preference_sources.order_by("id")
    ])
    Prompt.objects.bulk_create(
        (Prompt(study=copy, text=p.text, external_id=p.external_id, metadata=p.metadata)
         for p in study.prompts.order_by("id").iterator()),
        batch_size=1000,
    )
    return copy


def results_for_page(study: Study, origin: str) -> results_cache.CachedResults:
    """The results the page (and its poll, and the plot) show: the current snapshot; else, for a
    small study, results computed now; else the last snapshot, with a recomputation queued."""
    snapshot, current = results_cache.current_snapshot(study, origin)
    if current:
        return results_cache.cached(snapshot, study, origin, current=True)
    if results_cache.small_enough_to_compute_now(study, origin):
        return results_cache.compute_and_store(study, origin)
    if results_cache.claim_refresh(study, origin):
        transaction.on_commit(lambda: _queue_refresh(study.pk, origin))
    return results_cache.cached(snapshot, study, origin, current=False)


def _queue_refresh(study_id: int, origin: str) -> None:
    """Queue a recomputation of the results; with the broker down the page still shows the last
    snapshot (marked out of date), and the next claim after UALIGN_RESULTS_REFRESH_SECONDS tries again."""
    try:
        tasks.refresh_results.apply_async((study_id, origin), retry=False)  # a page waits on this: no retries
    except tasks.BROKER_ERRORS:
        logger.exception("results of study %s (%s): the recomputation could not be queued", study_id, origin)
