"""The researcher pages: the admin's Prepare button, the job status page polled by htmx, and the
permissions every researcher page asks for (`studies.researcher_views.study_for`)."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from studies.models import Job, PreferenceSource, Study
from studies.tasks import generate_candidates
from tests.factories import make_generator, make_policy, make_prompt, make_study

pytestmark = pytest.mark.django_db


def _ready_to_prepare() -> Study:
    study = make_study(generator=make_generator())
    make_prompt(study=study)
    make_policy(study=study, kind="sample")
    PreferenceSource.objects.create(study=study, kind="persona_judge", params={"personas": ["a tea lover"]})
    return study


def test_the_study_page_has_a_prepare_button_with_csrf_and_a_job_status_region(researcher_client):
    study = _ready_to_prepare()
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert reverse("admin:studies_study_prepare", args=[study.pk]) in page
    assert "csrfmiddlewaretoken" in page
    assert f'hx-get="{reverse("admin:studies_study_jobs", args=[study.pk])}"' in page


def test_pressing_prepare_starts_the_chain_and_shows_its_jobs(researcher_client, django_capture_on_commit_callbacks):
    study = _ready_to_prepare()
    with mock.patch.object(generate_candidates, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        response = researcher_client.post(reverse("admin:studies_study_prepare", args=[study.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:studies_study_jobs", args=[study.pk])
    study.refresh_from_db()
    assert study.status == Study.Status.PREPARING
    delay.assert_called_once()
    page = researcher_client.get(response["Location"]).content.decode()
    assert "Generate candidates" in page
    assert "Build comparison items" in page


def test_prepare_with_problems_explains_them_and_starts_nothing(researcher_client):
    study = make_study()
    response = researcher_client.post(reverse("admin:studies_study_prepare", args=[study.pk]), follow=True)
    assert "Choose a generator model" in response.content.decode()
    assert not Job.objects.filter(study=study).exists()


def test_prepare_needs_a_post(researcher_client):
    study = _ready_to_prepare()
    assert researcher_client.get(reverse("admin:studies_study_prepare", args=[study.pk])).status_code == 405


def test_non_staff_users_cannot_prepare_or_see_jobs(client, outsider):
    study = _ready_to_prepare()
    client.force_login(outsider)
    response = client.post(reverse("admin:studies_study_prepare", args=[study.pk]))
    assert response.status_code == 302
    assert "/login/" in response["Location"]
    assert "/login/" in client.get(reverse("admin:studies_study_jobs", args=[study.pk]))["Location"]
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT


def test_htmx_gets_the_job_status_partial_which_polls_only_while_jobs_are_active(researcher_client):
    study = _ready_to_prepare()
    parent = Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.RUNNING, progress=0.3)
    step = Job.objects.create(study=study, parent=parent, kind=Job.Kind.GENERATE, status=Job.Status.RUNNING,
                              progress=0.6, progress_message="prompt 3 of 5")
    url = reverse("admin:studies_study_jobs", args=[study.pk])

    partial = researcher_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in partial
    assert 'id="job-status"' in partial
    assert 'hx-trigger="every 2s"' in partial
    assert "prompt 3 of 5" in partial
    assert 'value="60"' in partial

    Job.objects.filter(pk__in=[parent.pk, step.pk]).update(status=Job.Status.DONE, progress=1)
    done = researcher_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in done

    full = researcher_client.get(url).content.decode()
    assert "<html" in full
    assert 'id="job-status"' in full


def test_job_errors_are_shown_escaped(researcher_client):
    study = _ready_to_prepare()
    parent = Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.FAILED)
    Job.objects.create(study=study, parent=parent, kind=Job.Kind.POPULATE, status=Job.Status.FAILED,
                       error="ValueError: <script>alert(1)</script>")
    page = researcher_client.get(reverse("admin:studies_study_jobs", args=[study.pk]),
                                 headers={"HX-Request": "true"}).content.decode()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page
    assert "press Prepare again" in page


def test_the_source_form_rejects_params_that_do_not_fit_the_kind(researcher_client):
    study = _ready_to_prepare()
    response = researcher_client.post(
        reverse("admin:studies_preferencesource_add"),
        {"study": study.pk, "kind": "persona_judge", "weight": "1", "params": '{"persona": ["typo"]}', "data": ""},
    )
    assert response.status_code == 200
    assert "personas" in response.content.decode()
    assert study.preference_sources.count() == 1


def test_the_source_form_saves_valid_params(researcher_client):
    study = _ready_to_prepare()
    response = researcher_client.post(
        reverse("admin:studies_preferencesource_add"),
        {"study": study.pk, "kind": "embedding", "weight": "2", "params": '{"personas": ["likes brevity"]}', "data": ""},
    )
    assert response.status_code == 302
    assert study.preference_sources.filter(kind="embedding", weight=2).exists()


def test_a_chain_queued_for_long_with_nothing_running_hints_that_no_worker_is_running(researcher_client):
    study = _ready_to_prepare()
    parent = Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.RUNNING)
    Job.objects.create(study=study, parent=parent, kind=Job.Kind.GENERATE)
    url = reverse("admin:studies_study_jobs", args=[study.pk])
    assert "waiting-for-worker" not in researcher_client.get(url, headers={"HX-Request": "true"}).content.decode()
    Job.objects.filter(pk=parent.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert "waiting-for-worker" in researcher_client.get(url, headers={"HX-Request": "true"}).content.decode()


# --- Permissions: the same model permissions as the admin, not is_staff alone ------------------


@pytest.fixture
def staff_client(client, django_user_model):
    """Logged in as staff with no permission at all (the admin refuses this user everything)."""
    client.force_login(django_user_model.objects.create_user("staff-only", password="pw", is_staff=True))
    return client


def _grant(client, *codenames: str) -> None:
    """Give the logged-in user these permissions of the studies app."""
    user = get_user_model().objects.get(pk=client.session["_auth_user_id"])
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="studies", codename__in=codenames))


def _researcher_pages(study: Study) -> dict[str, tuple[str, str]]:
    """Every researcher page: name → (HTTP method, URL)."""
    pages = {
        "results": ("get", reverse("studies:results", args=[study.slug])),
        "plot": ("get", reverse("studies:results_plot", args=[study.slug])),
        "jobs": ("get", reverse("admin:studies_study_jobs", args=[study.pk])),
        "prepare": ("post", reverse("admin:studies_study_prepare", args=[study.pk])),
    }
    for table in ("judgments", "items", "candidates", "prompts", "summary"):
        pages[f"export {table}"] = ("get", reverse("studies:export", args=[study.slug, table]))
    return pages


def test_a_staff_user_without_permissions_gets_403_on_every_researcher_page(staff_client):
    study = _ready_to_prepare()
    for name, (method, url) in _researcher_pages(study).items():
        assert getattr(staff_client, method)(url).status_code == 403, name
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT
    assert not Job.objects.filter(study=study).exists()


def test_viewing_a_study_without_viewing_judgments_shows_its_jobs_and_design_but_no_judgments(staff_client):
    study = _ready_to_prepare()
    _grant(staff_client, "view_study")
    pages = _researcher_pages(study)
    allowed = {"jobs", "export items", "export candidates", "export prompts"}
    for name, (method, url) in pages.items():
        expected = 200 if name in allowed else 403
        assert getattr(staff_client, method)(url).status_code == expected, name


def test_results_and_judgment_exports_need_the_view_judgment_permission_too(staff_client):
    study = _ready_to_prepare()
    _grant(staff_client, "view_study", "view_judgment")
    pages = _researcher_pages(study)
    for name in ("results", "plot", "export judgments", "export summary"):
        method, url = pages[name]
        assert getattr(staff_client, method)(url).status_code == 200, name
    method, url = pages["prepare"]
    assert getattr(staff_client, method)(url).status_code == 403  # acting needs change_study


def test_prepare_is_allowed_with_the_change_study_permission(staff_client, django_capture_on_commit_callbacks):
    study = _ready_to_prepare()
    _grant(staff_client, "view_study", "change_study")
    with mock.patch.object(generate_candidates, "delay"), django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("admin:studies_study_prepare", args=[study.pk]))
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.status == Study.Status.PREPARING
