"""Issue #24 findings 2 and 6: an import runs once, a stalled one says so, and candidate imports
go to a worker like prompt imports.

The probe: upload a large file, kill -9 the worker, restart it, upload again: the redelivered first
message and the second upload both imported their rows (40,000 prompts became 80,000), and the
stalled job said "Running 24%" for an hour.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from studies import importing, services
from studies.models import Candidate, Job, Prompt
from studies.tasks import import_candidates as candidates_task
from studies.tasks import import_prompts as prompts_task
from tests.factories import anonymous_rows, make_study
from tests.pipeline import wait_for_job

HX = {"HX-Request": "true"}


def pools_jsonl(n: int, *, bad_line: int | None = None) -> bytes:
    lines = [json.dumps({"external_id": f"q{i}", "prompt": f"Question {i}?", "candidates": [f"Answer {i}a", f"Answer {i}b"]})
             for i in range(1, n + 1)]
    if bad_line:
        lines[bad_line - 1] = json.dumps({"external_id": f"q{bad_line}", "prompt": "Q?", "candidates": []})
    return ("\n".join(lines) + "\n").encode()


def as_if_its_worker_died(job: Job) -> Job:
    """The job claimed by a worker that was then killed: running, its heartbeat long gone."""
    long_ago = timezone.now() - Job.stale_after() - timedelta(seconds=5)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, attempts=1, started_at=long_ago,
                                         heartbeat_at=long_ago, progress=0.24, progress_message="Checked 10000 rows")
    job.refresh_from_db()
    return job


# --- One active import per study ------------------------------------------------------------


@pytest.mark.django_db
def test_the_database_holds_one_active_import_per_study():
    study = make_study()
    Job.objects.create(study=study, kind=Job.Kind.IMPORT_PROMPTS, status=Job.Status.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(study=study, kind=Job.Kind.IMPORT_CANDIDATES)
    Job.objects.create(study=make_study(), kind=Job.Kind.IMPORT_PROMPTS)  # another study: fine
    Job.objects.create(study=study, kind=Job.Kind.IMPORT_PROMPTS, status=Job.Status.DONE)  # finished: fine


@pytest.mark.django_db
def test_the_probes_crash_then_reupload_imports_the_rows_once(researcher_client, settings):
    settings.UALIGN_IMPORT_BACKGROUND_BYTES = 1000
    study = make_study()
    url = reverse("admin:studies_study_import_prompts", args=[study.pk])
    first = researcher_client.post(url, {"file": SimpleUploadedFile("p.jsonl", anonymous_rows(300))})
    assert first.status_code == 302
    job = as_if_its_worker_died(Job.objects.get(study=study))

    again = researcher_client.post(url, {"file": SimpleUploadedFile("p.jsonl", anonymous_rows(300))})
    assert again.status_code == 409
    assert "Another import into this study is queued or running" in again.content.decode()
    assert Job.objects.filter(study=study).count() == 1

    prompts_task(job.pk)  # the first message, redelivered after the restart
    prompts_task(job.pk)  # and once more (the visibility timeout): it finds the job done
    job.refresh_from_db()
    assert job.status == Job.Status.DONE
    assert Prompt.objects.filter(study=study).count() == 300


@pytest.mark.django_db
def test_a_run_that_finds_its_job_finished_by_another_run_saves_nothing():
    """A worker that was only slow (its job reclaimed as stale) reaches its save after the
    reclaiming run committed: it must not save the rows a second time."""
    study = make_study()
    job = services.start_prompt_import(study=study, filename="p.jsonl", data=anonymous_rows(200))
    slow_run = as_if_its_worker_died(job)
    prompts_task(job.pk)  # the reclaiming run imports and finishes the job
    assert Prompt.objects.filter(study=study).count() == 200
    Job.objects.filter(pk=job.pk).update(payload=anonymous_rows(200))  # the slow run read it before
    assert importing.run_import_job(slow_run) == {"created": 200}  # its save finds the job done
    assert Prompt.objects.filter(study=study).count() == 200


# --- A stalled import says so, and can be retried --------------------------------------------


@pytest.mark.django_db
def test_a_job_whose_worker_died_shows_stale_with_a_retry_button(researcher_client, django_capture_on_commit_callbacks):
    study = make_study()
    job = as_if_its_worker_died(services.start_prompt_import(study=study, filename="p.jsonl", data=anonymous_rows(50)))
    page = reverse("admin:studies_study_import_prompts", args=[study.pk]) + f"?job={job.pk}"
    partial = researcher_client.get(page, headers=HX).content.decode()
    assert "Stale: the worker stopped" in partial
    assert 'id="import-retry"' in partial

    with django_capture_on_commit_callbacks() as sent:
        response = researcher_client.post(reverse("admin:studies_study_retry_import", args=[study.pk, job.pk]))
    assert response.status_code == 302
    assert len(sent) == 1  # its message, sent once the retry commits
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    prompts_task(job.pk)
    assert Prompt.objects.filter(study=study).count() == 50
    assert "Imported 50 prompts" in researcher_client.get(page, headers=HX).content.decode()


@pytest.mark.django_db
def test_a_running_job_with_a_fresh_heartbeat_is_not_stale_and_cannot_be_retried(researcher_client):
    study = make_study()
    job = services.start_prompt_import(study=study, filename="p.jsonl", data=anonymous_rows(5))
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, heartbeat_at=timezone.now())
    page = reverse("admin:studies_study_import_prompts", args=[study.pk]) + f"?job={job.pk}"
    assert "Stale" not in researcher_client.get(page, headers=HX).content.decode()
    researcher_client.post(reverse("admin:studies_study_retry_import", args=[study.pk, job.pk]))
    assert Job.objects.get(pk=job.pk).status == Job.Status.RUNNING


@pytest.mark.django_db
def test_a_pipeline_step_whose_worker_died_shows_stale_on_the_jobs_page(researcher_client):
    study = make_study(status="preparing")
    parent = Job.objects.create(study=study, kind=Job.Kind.PREPARE)
    step = Job.objects.create(study=study, parent=parent, kind=Job.Kind.GENERATE, params={"step": 0, "steps": 1})
    as_if_its_worker_died(step)
    page = researcher_client.get(reverse("admin:studies_study_jobs", args=[study.pk])).content.decode()
    assert "Stale: the worker stopped" in page
    assert "Press Prepare" in page


# --- Candidate imports go to a worker, with progress -----------------------------------------


def test_a_large_candidate_file_is_imported_by_a_worker_with_progress(celery_worker_process, researcher_client,
                                                                       settings):
    settings.UALIGN_IMPORT_BACKGROUND_BYTES = 10_000
    study = make_study()
    url = reverse("admin:studies_study_import_candidates", args=[study.pk])
    response = researcher_client.post(url, {"file": SimpleUploadedFile("pools.jsonl", pools_jsonl(3000))})
    job = Job.objects.get(study=study, kind=Job.Kind.IMPORT_CANDIDATES)
    assert response.status_code == 302
    assert response["Location"].endswith(f"?job={job.pk}")
    assert 'id="import-job"' in researcher_client.get(response["Location"]).content.decode()

    job = wait_for_job(job, celery_worker_process)
    assert job.status == Job.Status.DONE, (job.error, celery_worker_process.log())
    assert job.result == {"prompts_created": 3000, "prompts_matched": 0, "candidates": 6000}
    assert job.progress_message == "Saving the candidates of 3000 prompts"  # its last report before the commit
    assert Job.objects.filter(pk=job.pk).values_list("payload", flat=True).get() is None
    assert Candidate.objects.filter(prompt__study=study).count() == 6000
    partial = researcher_client.get(response["Location"], headers=HX).content.decode()
    assert "Imported 6000 candidates for 3000 new and 0 existing prompts" in partial
    assert "hx-trigger" not in partial


@pytest.mark.django_db
def test_one_bad_row_in_a_background_candidate_import_saves_nothing_and_is_listed():
    study = make_study()
    job = services.start_candidate_import(study=study, filename="pools.jsonl", data=pools_jsonl(500, bad_line=321))
    with pytest.raises(importing.ImportRejected):
        candidates_task(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "line 321: candidates must be a non-empty list" in job.error
    assert not Prompt.objects.filter(study=study).exists()


@pytest.mark.django_db
def test_a_candidate_import_delivered_twice_imports_once():
    study = make_study()
    job = services.start_candidate_import(study=study, filename="pools.jsonl", data=pools_jsonl(100))
    candidates_task(job.pk)
    candidates_task(job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.DONE, 1)
    assert Candidate.objects.filter(prompt__study=study).count() == 200


@pytest.mark.django_db
def test_a_candidate_import_is_refused_while_another_import_is_active(researcher_client, settings):
    settings.UALIGN_IMPORT_BACKGROUND_BYTES = 1000
    study = make_study()
    services.start_prompt_import(study=study, filename="p.jsonl", data=anonymous_rows(50))
    url = reverse("admin:studies_study_import_candidates", args=[study.pk])
    response = researcher_client.post(url, {"file": SimpleUploadedFile("pools.jsonl", pools_jsonl(100))})
    assert response.status_code == 409
    assert "Another import into this study is queued or running" in response.content.decode()
    assert not Job.objects.filter(kind=Job.Kind.IMPORT_CANDIDATES).exists()
