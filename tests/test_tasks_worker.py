"""The pipeline through a REAL `celery worker` process over Redis, including a worker killed mid-job."""

from __future__ import annotations

from studies import services
from studies.models import Candidate, ComparisonItem, Job, PolicyFit, Study
from tests.pipeline import pipeline_study, wait_for_worker


def test_prepare_runs_the_whole_pipeline_through_a_real_worker(celery_worker_process, tiny_model):
    study = pipeline_study(tiny_model)
    parent = services.prepare_study(study=study)

    wait_for_worker(lambda: Study.objects.get(pk=study.pk).status != Study.Status.PREPARING, 60, celery_worker_process, "the chain")

    study.refresh_from_db()
    parent.refresh_from_db()
    assert study.status == Study.Status.READY, (parent.error, celery_worker_process.log())
    assert parent.status == Job.Status.DONE
    assert all(s.status == Job.Status.DONE and s.attempts == 1 for s in parent.steps.all())
    assert Candidate.objects.filter(prompt__study=study, generator=study.generator).count() > 0
    assert PolicyFit.objects.filter(prompt__study=study).count() == 2 * 2 * 2
    assert ComparisonItem.objects.filter(study=study, is_attention_check=False).count() == 16
    assert ComparisonItem.objects.filter(study=study, is_attention_check=True).exists()


def test_a_worker_killed_mid_generation_finishes_after_a_restart(celery_worker_process, tiny_model, monkeypatch):
    # Enough work that the kill lands between prompts: 8 prompts × 8 samples × 32 tokens.
    study = pipeline_study(tiny_model, n_prompts=8, pool=8, max_new_tokens=32, attention_check_rate=0)
    study.generator.batch_size = 2
    study.generator.save()
    parent = services.prepare_study(study=study)
    generate = parent.steps.get(kind=Job.Kind.GENERATE)

    def some_prompts_done() -> bool:
        return Candidate.objects.filter(prompt__study=study).values("prompt").distinct().count() >= 1

    wait_for_worker(some_prompts_done, 60, celery_worker_process, "the first prompt's pool")
    celery_worker_process.kill_all()
    generate.refresh_from_db()
    assert generate.status == Job.Status.RUNNING, "the kill should land mid-generation; make the work longer"
    done_before = Candidate.objects.filter(prompt__study=study).values("prompt").distinct().count()
    assert done_before < 8

    # The restarted worker takes the unacked message back (Redis visibility timeout) and reclaims
    # the job once its heartbeat is stale; short limits keep the test quick.
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "1")
    monkeypatch.setenv("UALIGN_JOB_STALE_SECONDS", "2")
    celery_worker_process.start()

    wait_for_worker(lambda: Study.objects.get(pk=study.pk).status != Study.Status.PREPARING, 120, celery_worker_process, "the chain")
    generate.refresh_from_db()
    study.refresh_from_db()
    assert generate.status == Job.Status.DONE, celery_worker_process.log()
    assert generate.attempts == 2
    assert study.status == Study.Status.READY
    rows = Candidate.objects.filter(prompt__study=study, generator=study.generator)
    assert sum(rows.values_list("multiplicity", flat=True)) == 8 * 8  # every sample once, none twice
    assert rows.values("prompt").distinct().count() == 8
