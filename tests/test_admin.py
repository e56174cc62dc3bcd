from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies.models import Prompt
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db

MODELS = ["study", "prompt", "generatormodel", "preferencesource", "policy", "candidate", "policyfit",
          "comparisonitem", "participant", "assignment", "judgment", "job"]


@pytest.fixture
def populated_study():
    study = make_study()
    prompt = make_prompt(study=study, text="<script>alert(1)</script> prompt")
    make_item(study=study, prompt=prompt, policy=make_policy(study=study), texts=["a", "b"], counts=[(1, 0), (1, 1)])
    make_participant(study=study)
    return study


@pytest.mark.parametrize("model", MODELS)
def test_admin_changelist_renders_for_staff(researcher_client, populated_study, model):
    response = researcher_client.get(reverse(f"admin:studies_{model}_changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize("model", MODELS)
def test_admin_changelist_redirects_anonymous_users_to_login(client, model):
    url = reverse(f"admin:studies_{model}_changelist")
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_admin_refuses_logged_in_non_staff(client, outsider):
    client.force_login(outsider)
    response = client.get(reverse("admin:studies_study_changelist"))
    assert response.status_code == 302


def test_study_page_shows_its_prompt_count_and_import_link(researcher_client, populated_study):
    response = researcher_client.get(reverse("admin:studies_study_change", args=[populated_study.pk]))
    assert response.status_code == 200
    assert "1 prompts" in response.content.decode()
    assert reverse("admin:studies_study_import_prompts", args=[populated_study.pk]) in response.content.decode()


def test_generated_rows_are_read_only_in_the_admin(researcher_client, populated_study):
    item = populated_study.items.first()
    response = researcher_client.get(reverse("admin:studies_comparisonitem_change", args=[item.pk]))
    assert response.status_code == 200
    assert b'name="_save"' not in response.content
    assert researcher_client.get(reverse("admin:studies_candidate_add")).status_code == 403


def test_admin_import_creates_prompts_and_redirects(researcher_client):
    study = make_study()
    upload = SimpleUploadedFile("p.csv", b"text,external_id\nHello there,h1\nGood bye,h2\n", content_type="text/csv")
    url = reverse("admin:studies_study_import_prompts", args=[study.pk])
    response = researcher_client.post(url, {"file": upload})
    assert response.status_code == 302
    assert sorted(Prompt.objects.filter(study=study).values_list("external_id", flat=True)) == ["h1", "h2"]


def test_admin_import_shows_row_errors_and_saves_nothing(researcher_client):
    study = make_study()
    upload = SimpleUploadedFile("p.jsonl", b'{"text": "fine"}\n{"text": ""}\n', content_type="application/json")
    url = reverse("admin:studies_study_import_prompts", args=[study.pk])
    response = researcher_client.post(url, {"file": upload})
    assert response.status_code == 200
    assert "line 2: text is missing or empty" in response.content.decode()
    assert not Prompt.objects.filter(study=study).exists()


def test_admin_import_requires_csrf(client, researcher):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(researcher)
    study = make_study()
    upload = SimpleUploadedFile("p.csv", b"text\nhi\n")
    response = csrf_client.post(reverse("admin:studies_study_import_prompts", args=[study.pk]), {"file": upload})
    assert response.status_code == 403
    assert not Prompt.objects.exists()
