"""The smaller admin fixes of issue #25: k values as typed, required fields named, pool size hidden
for imported pools, job times as times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from studies.forms import KValuesField
from studies.models import Candidate, Job, Study
from tests.factories import make_prompt, make_study

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("typed", "value"), [("1, 3", [1, 3]), ("2;4", [2, 4]), ("[1, 2]", [1, 2]), (" 8 ", [8])])
def test_k_values_are_accepted_as_typed(typed, value):
    assert KValuesField().clean(typed) == value


def test_k_values_that_are_not_numbers_get_a_readable_error():
    with pytest.raises(Exception, match="whole numbers separated by commas"):
        KValuesField().clean("1, two")


def study_form(researcher, data):
    request = RequestFactory().post("/")
    request.user = researcher
    form_class = admin.site.get_model_admin(Study).get_form(request, None)
    return form_class(data=data)


def test_the_study_form_takes_typed_k_values_and_names_required_fields(researcher):
    form = study_form(researcher, {"k_values": "1, 3"})
    assert not form.is_valid()
    assert form.errors["title"] == ["Title is required."]
    assert "k_values" not in form.errors
    assert form.cleaned_data["k_values"] == [1, 3]


def test_the_change_page_shows_k_values_as_typed_and_hides_pool_size_for_imported_pools(researcher_client):
    study = make_study(k_values=[1, 2])
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert 'name="pool_size"' in page
    assert ">1, 2<" in page or 'value="1, 2"' in page
    prompt = make_prompt(study=study)
    Candidate.objects.create(prompt=prompt, generator=None, sample_index=0, text="An imported answer")
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert 'name="pool_size"' not in page


def test_job_times_are_times_not_midnight(researcher_client):
    study = make_study()
    midnight = datetime(2026, 12, 7, 0, 0, 0, tzinfo=UTC)
    Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.DONE, progress=1.0,
                       started_at=midnight, finished_at=midnight)
    page = researcher_client.get(reverse("admin:studies_study_jobs", args=[study.pk])).content.decode()
    assert "midnight" not in page
    assert "2026-12-07 00:00:00" in page


def test_the_study_links_are_near_the_top_with_copy_buttons_and_no_inline_script(researcher_client):
    study = make_study()
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    top = page[: page.index("Annotators see")]
    link = study.participant_link()
    assert top.count('class="copy-link button"') == 2
    assert 'data-copy="http' in top
    assert link in top
    assert "ualign/copy-link.js" in page
    assert "onclick" not in page
