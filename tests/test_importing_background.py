"""Prompt files too large for a web request are imported by a worker: progress, all rows or none."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies.models import Job, Prompt
from studies.services import start_prompt_import
from studies.tasks import import_prompts as import_task
from tests.factories import make_study
from tests.pipeline import wait_for_job

HX = {"HX-Request": "true"}


def jsonl(n: int, *, bad_line: int | None = None) -> bytes:
    lines = [f'{{"text": "Prompt number {i}: say something kind.", "external_id": "p{i}"}}' for i in range(1, n + 1)]
    if bad_line:
        lines[bad_line - 1] = '{"text": "", "external_id": "empty"}'
    return ("\n".join(lines) + "\n").encode()


def upload(client, study, data: bytes):
    url = reverse("admin:studies_study_import_prompts", args=[study.pk])
    return client.post(url, {"file": SimpleUploadedFile("prompts.jsonl", data)})


def test_a_file_past_the_threshold_is_imported_by_a_worker_with_progress(
    celery_worker_process, researcher_client, settings
):
    settings.UALIGN_IMPORT_BACKGROUND_BYTES = 10_000
    study = make_study()
    response = upload(researcher_client, study, jsonl(20_000))
    job = Job.objects.get(kind=Job.Kind.IMPORT_PROMPTS)
    assert response.status_code == 302
    assert response["Location"].endswith(f"?job={job.pk}")
    page = researcher_client.get(response["Location"]).content.decode()
    assert 'id="import-job"' in page  # the progress region, polled while the job runs

    job = wait_for_job(job, celery_worker_process)
    assert job.status == Job.Status.DONE, (job.error, celery_worker_process.log())
    assert job.result == {"created": 20_000}
    assert job.progress_message == "Saving 20000 prompts"  # its last report before the commit
    assert Job.objects.filter(pk=job.pk).values_list("payload", flat=True).get() is None  # the upload is dropped
    assert Prompt.objects.filter(study=study).count() == 20_000
    partial = researcher_client.get(response["Location"], headers=HX).content.decode()
    assert "<html" not in partial
    assert "Imported 20000 prompts" in partial
    assert "hx-trigger" not in partial  # finished: polling stops


def test_one_bad_row_in_a_background_import_saves_nothing_and_is_listed(
    celery_worker_process, researcher_client, settings
):
    settings.UALIGN_IMPORT_BACKGROUND_BYTES = 10_000
    study = make_study()
    response = upload(researcher_client, study, jsonl(20_000, bad_line=15_000))
    job = wait_for_job(Job.objects.get(kind=Job.Kind.IMPORT_PROMPTS), celery_worker_process)
    assert job.status == Job.Status.FAILED
    assert "line 15000: text is missing or empty" in job.error
    assert not Prompt.objects.filter(study=study).exists()
    partial = researcher_client.get(response["Location"], headers=HX).content.decode()
    assert "Nothing was imported: 1 problem found." in partial
    assert "line 15000: text is missing or empty" in partial


@pytest.mark.django_db
def test_an_import_job_delivered_twice_imports_once():
    study = make_study()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(import_task, "delay_on_commit", lambda job_id: None)  # run it here instead
        job = start_prompt_import(study=study, filename="p.jsonl", data=jsonl(300))
    import_task(job.pk)
    import_task(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.DONE
    assert job.attempts == 1
    assert Prompt.objects.filter(study=study).count() == 300


@pytest.mark.django_db
def test_a_small_file_is_still_imported_in_the_request(researcher_client):
    study = make_study()
    response = upload(researcher_client, study, jsonl(10))
    assert response["Location"] == reverse("admin:studies_study_change", args=[study.pk])
    assert not Job.objects.exists()
    assert Prompt.objects.filter(study=study).count() == 10
