"""Issue #24 finding 3: a broker outage when a job is queued gives a clear 503 and leaves nothing
"queued" forever.

The probe: Redis down, press Prepare or import a large file: a bare 500 after 7 s, the study stuck
in "preparing" and the jobs "queued", with no message behind them. Here the broker is a real
address that refuses connections (a bound port that never listens), with the publish retries cut
short so the test doesn't wait out the production policy (about 20 s).
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies import services
from studies.models import Job, Study
from studies.tasks import NOT_STARTED, QueueUnavailable
from tests.csv_study import byo_study
from tests.factories import anonymous_rows
from ualign_web.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)  # the message is sent when the transaction commits


@pytest.fixture
def broker_down(monkeypatch, dead_port):
    monkeypatch.setattr(celery_app.conf, "broker_write_url", f"redis://127.0.0.1:{dead_port}/0")
    monkeypatch.setitem(celery_app.conf, "broker_connection_timeout", 1)
    monkeypatch.setitem(celery_app.conf, "task_publish_retry_policy",
                        {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1})
    # Fresh connection and producer pools, on the dead address (earlier tests may have made both).
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)
    # The sender keeps the retry policy it was made with: make one with the short policy.
    monkeypatch.setattr(celery_app.amqp, "send_task_message", celery_app.amqp._create_task_sender())


def test_prepare_with_the_broker_down_answers_503_and_the_study_is_a_draft_again(researcher_client, broker_down):
    study = byo_study()
    response = researcher_client.post(reverse("admin:studies_study_prepare", args=[study.pk]))
    assert response.status_code == 503
    assert response["Retry-After"]
    assert "Not started: the queue is unreachable" in response.content.decode()
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT
    assert not Job.objects.active().exists()  # nothing stays queued
    parent = Job.objects.get(study=study, kind=Job.Kind.PREPARE)
    assert parent.status == Job.Status.FAILED
    assert NOT_STARTED in parent.error
    assert Job.objects.get(study=study, kind=Job.Kind.GENERATE).error == NOT_STARTED
    jobs_page = researcher_client.get(reverse("admin:studies_study_jobs", args=[study.pk])).content.decode()
    assert "the queue is unreachable" in jobs_page


def test_a_background_import_with_the_broker_down_answers_503_and_can_be_uploaded_again(researcher_client,
                                                                                          broker_down, settings):
    settings.UALIGN_IMPORT_BACKGROUND_BYTES = 1000
    study = byo_study()
    study.prompts.all().delete()
    url = reverse("admin:studies_study_import_prompts", args=[study.pk])
    response = researcher_client.post(url, {"file": SimpleUploadedFile("p.jsonl", anonymous_rows(100))})
    assert response.status_code == 503
    job = Job.objects.get(study=study, kind=Job.Kind.IMPORT_PROMPTS)
    assert (job.status, job.error) == (Job.Status.FAILED, NOT_STARTED)
    assert Job.objects.filter(pk=job.pk).values_list("payload", flat=True).get() is None
    assert not Job.objects.active().exists()
    # Not an active import: another upload is not refused as "busy" (it meets the same outage here).
    with pytest.raises(QueueUnavailable):
        services.start_prompt_import(study=study, filename="p.jsonl", data=anonymous_rows(10))
