"""Studies run through the real pipeline on the tiny random model (the `tiny_model` fixture in
tests/conftest.py), shared by the task, worker, doctor and fault tests, and the waits on a real
worker (`wait_for_worker`, `wait_for_job`) that they and the background-import tests share.
"""

from __future__ import annotations

import time

from studies.models import Job, Policy, PreferenceSource, Study
from studies.steps import population
from tests.factories import make_generator, make_policy, make_prompt, make_study

POOL = 4

# A handful of steps: enough to write checkpoints and move the adapters, quick on a tiny model.
TFPO = {"steps": 4, "pairs_per_step": 2, "checkpoint_every": 2, "learning_rate": 1e-3, "lora_rank": 2}
REWARDS = {"max_response_tokens": 8, "positive_system": "Answer well.", "negative_system": "Answer badly."}


def csv_utility(t: int, j: int) -> int:
    """Type t's utility for the prompt's j-th candidate (population order)."""
    return (j * (t + 2)) % (POOL + 1)


def csv_for(study: Study) -> str:
    """Utilities of three types for every generated candidate of the study, named by id (CSV_HELP)."""
    lines = ["type,candidate_id,utility,prompt_id"]
    for prompt in study.prompts.order_by("id"):
        for t, name in enumerate(["terse", "verbose", "odd"]):
            lines += [f"{name},{c.pk},{csv_utility(t, j)},{prompt.pk}"
                      for j, c in enumerate(population.population_candidates(prompt))]
    return "\n".join(lines)


def pipeline_study(model_dir, *, n_prompts=2, pool=POOL, max_new_tokens=6, **overrides) -> Study:
    """A study ready to prepare, its population from two personas judged by the tiny model itself
    (a CSV source can only be written once the candidates exist: see the CSV tests in test_tasks.py)."""
    generator = make_generator(model_ref=str(model_dir), decoding={"max_new_tokens": max_new_tokens}, batch_size=4)
    fields = {"generator": generator, "pool_size": pool, "k_values": [1, 2], "attention_check_rate": 0.2, **overrides}
    study = make_study(**fields)
    for i in range(n_prompts):
        make_prompt(study=study, external_id=f"q{i}", text=f"Question {i}: what is tea?")
    make_policy(study=study, name="sample", kind="sample")
    make_policy(study=study, name="u-align", kind="multiplayer")
    PreferenceSource.objects.create(study=study, kind="persona_judge",
                                    params={"model": str(model_dir), "personas": ["Likes it terse.", "Likes detail."]})
    return study


def pipeline_csv_study(model_dir, **kwargs) -> Study:
    """`pipeline_study` whose only source is an uploaded CSV, still empty (the candidates don't exist yet)."""
    study = pipeline_study(model_dir, **kwargs)
    study.preference_sources.all().delete()
    PreferenceSource.objects.create(study=study, kind="csv", data="")
    return study


def doctor_study(model_dir, params=None, **kwargs) -> Study:
    """`pipeline_study` plus a doctor policy (LLMdoctor, issue #15) with a short training."""
    study = pipeline_study(model_dir, **kwargs)
    params = params or {"alpha": 0.5, "beta": 0.7, "rewards": REWARDS, "tfpo": TFPO}
    make_policy(study=study, name="doctor", kind=Policy.Kind.DOCTOR, params=params)
    return study


def wait_for_worker(predicate, timeout: float, worker, what: str) -> None:
    """Poll until `predicate()` holds; on timeout fail with the jobs and the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    jobs = list(Job.objects.values_list("kind", "status", "attempts", "error"))
    raise AssertionError(f"timed out waiting for {what}; jobs {jobs}\n{worker.log()}")


def wait_for_job(job: Job, worker, timeout: float = 120) -> Job:
    """Poll until the job is finished; on timeout fail with its state and the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.2)
    raise AssertionError(f"the import job did not finish: {job.status} {job.progress_message}\n{worker.log()}")
