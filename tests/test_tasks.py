"""The pipeline's step tasks, called directly with ids (house style E), on a tiny random model."""

from __future__ import annotations

import json
from datetime import timedelta
from unittest import mock

import numpy as np
import pytest
from celery.exceptions import Retry
from django.utils import timezone

from studies import services
from studies.models import (
    Candidate,
    ComparisonItem,
    Job,
    PolicyFit,
    PreferenceSource,
    Study,
)
from studies.steps import population
from studies.tasks import (
    build_items,
    build_populations,
    fit_policies,
    generate_candidates,
)
from tests.factories import make_study
from tests.pipeline import (
    POOL,
    csv_for,
    csv_utility,
    pipeline_csv_study,
    pipeline_study,
)

pytestmark = pytest.mark.django_db

def upload_csv(study: Study) -> None:
    source = study.preference_sources.get(kind="csv")
    source.data = csv_for(study)
    source.save()


def _pool(study) -> list[tuple]:
    return list(
        Candidate.objects.filter(prompt__study=study)
        .order_by("prompt_id", "sample_index")
        .values_list("prompt_id", "sample_index", "text", "multiplicity")
    )


def _step(parent: Job, kind: str) -> Job:
    return parent.steps.get(kind=kind)


def test_prepare_creates_the_chain_and_enqueues_generation_after_commit(django_capture_on_commit_callbacks, tiny_model):
    study = pipeline_study(tiny_model)
    with mock.patch.object(generate_candidates, "delay") as delay:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            parent = services.prepare_study(study=study)
        assert not delay.called  # nothing leaves before the commit
        for callback in callbacks:
            callback()
    steps = list(parent.steps.order_by("id"))
    assert [s.kind for s in steps] == ["generate", "populate", "fit", "build_items"]
    delay.assert_called_once_with(steps[0].pk)
    json.dumps(delay.call_args.args)  # ids only, JSON-safe
    study.refresh_from_db()
    assert study.status == Study.Status.PREPARING
    assert parent.params["generators"][0]["model"]["ref"] == str(tiny_model)
    assert parent.params["generators"][0]["decoding"]["max_new_tokens"] == 6


def test_model_steps_are_routed_to_the_gpu_queue_and_the_rest_to_default(settings):
    from ualign_web.celery import app

    router = app.amqp.router
    for task in (generate_candidates, build_populations):
        assert router.route({}, task.name)["queue"].name == "gpu"
    for task in (fit_policies, build_items):
        assert router.route({}, task.name)["queue"].name == "default"


def test_prepare_refuses_an_incomplete_study_with_readable_problems():
    study = make_study()
    with pytest.raises(services.PreparationError) as caught:
        services.prepare_study(study=study)
    text = " ".join(caught.value.problems)
    assert "generator" in text
    assert "prompt" in text
    assert "policy" in text
    assert "preference source" in text
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT
    assert not Job.objects.filter(study=study).exists()


def test_generation_task_is_idempotent_when_delivered_twice(tiny_model):
    study = pipeline_study(tiny_model)
    step = _step(services.prepare_study(study=study), Job.Kind.GENERATE)

    generate_candidates(step.pk)
    first = _pool(study)
    generate_candidates(step.pk)

    step.refresh_from_db()
    assert step.status == Job.Status.DONE
    assert step.attempts == 1
    assert _pool(study) == first
    assert sum(m for *_, m in first) == 2 * POOL
    candidate = Candidate.objects.filter(prompt__study=study).first()
    assert candidate.metadata["model"]["ref"] == str(tiny_model)
    assert candidate.metadata["versions"]["torch"]
    assert candidate.metadata["sample_indices"][0] == candidate.sample_index
    assert step.result["tokens"] > 0
    assert step.result["pools_generated"] == 2


def test_a_rerun_after_a_crash_regenerates_only_the_missing_prompt_identically(tiny_model):
    study = pipeline_study(tiny_model)
    step = _step(services.prepare_study(study=study), Job.Kind.GENERATE)
    generate_candidates(step.pk)
    before = _pool(study)
    last_prompt = study.prompts.order_by("id").last()
    kept_ids = set(Candidate.objects.exclude(prompt=last_prompt).values_list("pk", flat=True))
    # The worker died while writing the last prompt: its transaction never committed.
    Candidate.objects.filter(prompt=last_prompt).delete()
    Job.objects.filter(pk=step.pk).update(status=Job.Status.RUNNING, heartbeat_at=timezone.now() - timedelta(hours=1))

    generate_candidates(step.pk)

    step.refresh_from_db()
    assert step.status == Job.Status.DONE
    assert step.attempts == 2
    assert step.result["pools_generated"] == 1
    assert step.result["pools_skipped"] == 1
    assert _pool(study) == before
    assert kept_ids <= set(Candidate.objects.values_list("pk", flat=True))


def test_the_steps_run_in_order_leave_a_ready_study(tiny_model):
    study = pipeline_csv_study(tiny_model)
    parent = services.prepare_study(study=study)
    generate_candidates(_step(parent, "generate").pk)
    upload_csv(study)  # the populations step reads the source when it runs
    for kind, task in [("populate", build_populations), ("fit", fit_policies), ("build_items", build_items)]:
        task(_step(parent, kind).pk)
    parent.refresh_from_db()
    study.refresh_from_db()
    assert parent.status == Job.Status.DONE
    assert parent.progress == 1
    assert study.status == Study.Status.READY
    assert PolicyFit.objects.filter(prompt__study=study).count() == 2 * 2 * 2
    # 2 prompts × 2 policies × 2 k × (1 other policy + adversary).
    assert ComparisonItem.objects.filter(study=study, is_attention_check=False).count() == 16
    # Attention checks are 20% of the items people see (items decided by construction are never shown).
    judged = ComparisonItem.objects.filter(study=study, is_attention_check=False, needs_judgment=True).count()
    assert judged > 0
    assert ComparisonItem.objects.filter(study=study, is_attention_check=True).count() == round(0.2 / 0.8 * judged)


def test_a_failing_step_fails_the_chain_with_a_readable_error_and_returns_the_study_to_draft(tiny_model):
    # An empty CSV source: Prepare generates the candidates, then the populations step stops and
    # says how to get the candidates and upload their utilities.
    study = pipeline_csv_study(tiny_model)
    parent = services.prepare_study(study=study)
    generate_candidates(_step(parent, "generate").pk)

    with pytest.raises(Exception, match="No utilities uploaded yet"):
        build_populations(_step(parent, "populate").pk)

    populate = _step(parent, "populate")
    parent.refresh_from_db()
    study.refresh_from_db()
    assert populate.status == Job.Status.FAILED
    assert f"manage.py export_study {study.slug} --table candidates" in populate.error
    assert parent.status == Job.Status.FAILED
    assert "Build populations failed" in parent.error
    assert {s.status for s in parent.steps.filter(kind__in=["fit", "build_items"])} == {Job.Status.FAILED}
    assert study.status == Study.Status.DRAFT
    # Nothing generated is lost: pressing Prepare again reuses the pool.
    pool = _pool(study)
    upload_csv(study)
    again = services.prepare_study(study=study)
    generate_candidates(_step(again, "generate").pk)
    assert _step(again, "generate").result["pools_skipped"] == 2
    assert _pool(study) == pool


def test_a_csv_source_is_uploaded_after_generation_and_the_second_prepare_finishes_the_study(tiny_model):
    study = pipeline_csv_study(tiny_model)
    first = services.prepare_study(study=study)
    generate_candidates(_step(first, "generate").pk)
    with pytest.raises(Exception, match="No utilities"):
        build_populations(_step(first, "populate").pk)
    source = study.preference_sources.get()
    good = csv_for(study)

    # A file with a bad row is refused at Prepare, with its line, before any step runs.
    some = Candidate.objects.filter(prompt__study=study).first()
    source.data = good.replace(f"terse,{some.pk},", "terse,999999,", 1)
    source.save()
    with pytest.raises(services.PreparationError, match="no candidate has id 999999"):
        services.prepare_study(study=study)

    source.data = good
    source.save()
    parent = services.prepare_study(study=study)
    for kind, task in [("generate", generate_candidates), ("populate", build_populations), ("fit", fit_policies),
                       ("build_items", build_items)]:
        task(_step(parent, kind).pk)
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    for prompt in study.prompts.all():
        matrix = prompt.population
        assert matrix.type_labels == [f"csv-{source.pk}: {t}" for t in ("terse", "verbose", "odd")]
        column = {c.pk: j for j, c in enumerate(population.population_candidates(prompt))}
        expected = [[csv_utility(t, column[pk]) for pk in matrix.candidate_ids] for t in range(3)]
        np.testing.assert_array_equal(population.utilities_from_bytes(matrix.utilities), expected)


def test_a_duplicate_delivery_of_a_live_job_checks_back_later():
    job = Job.objects.create(kind=Job.Kind.POPULATE, status=Job.Status.RUNNING, attempts=1, heartbeat_at=timezone.now())
    with pytest.raises(Retry):
        build_populations(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert job.attempts == 1


def test_a_job_whose_worker_died_too_often_is_failed_instead_of_retried_forever(settings):
    stale = timezone.now() - timedelta(hours=1)
    job = Job.objects.create(
        kind=Job.Kind.FIT, status=Job.Status.RUNNING, attempts=settings.UALIGN_JOB_MAX_ATTEMPTS, heartbeat_at=stale
    )
    fit_policies(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "Gave up" in job.error


def test_pressing_prepare_while_preparing_enqueues_the_current_step_again(django_capture_on_commit_callbacks, tiny_model):
    study = pipeline_study(tiny_model)
    parent = services.prepare_study(study=study)
    generate_candidates(_step(parent, "generate").pk)
    with mock.patch.object(build_populations, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        again = services.prepare_study(study=Study.objects.get(pk=study.pk))
    assert again == parent
    delay.assert_called_once_with(_step(parent, "populate").pk)
    assert Job.objects.filter(study=study, kind=Job.Kind.PREPARE).count() == 1


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_model):
    from tests.tinymodels import tiny_bert_dir, tiny_model_dir, tiny_reward_model_dir

    root = tmp_path_factory.mktemp("tiny-sources")
    return {
        "judge": tiny_model,
        "doctor": tiny_model_dir(root / "doctor", seed=1, initializer_range=0.5),
        "embedder": tiny_bert_dir(root / "bert"),
        "reward": tiny_reward_model_dir(root / "rm"),
    }


def test_model_backed_sources_give_one_type_per_persona_or_reward_model(tiny_models):
    study = pipeline_study(tiny_models["judge"], n_prompts=1)
    study.preference_sources.all().delete()
    personas = ["Likes short answers.", "Likes long answers."]
    PreferenceSource.objects.create(study=study, kind="persona_judge", weight=2,
                                    params={"model": str(tiny_models["judge"]), "personas": personas})
    PreferenceSource.objects.create(study=study, kind="embedding", params={"model": str(tiny_models["embedder"]), "personas": personas})
    PreferenceSource.objects.create(study=study, kind="reward_model", params={"models": [str(tiny_models["reward"])]})
    parent = services.prepare_study(study=study)
    generate_candidates(_step(parent, "generate").pk)
    build_populations(_step(parent, "populate").pk)

    matrix = study.prompts.get().population
    assert len(matrix.weights) == 2 + 2 + 1
    assert matrix.weights[:2] == pytest.approx([0.25, 0.25])  # the judges' source weighs 2 of 4
    assert matrix.type_labels[0].startswith("persona_judge")
    assert _step(parent, "populate").status == Job.Status.DONE

