"""Preference sources documented in the admin from one source of truth (issue #25)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies.models import PreferenceSource
from studies.steps.preference_sources import KIND_DOCS, source_params_problems
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def test_every_kind_is_documented_and_its_example_passes_the_checks():
    assert {doc.kind for doc in KIND_DOCS} == set(PreferenceSource.Kind.values)
    for doc in KIND_DOCS:
        assert source_params_problems(doc.kind, doc.example) == [], doc.kind
        for param in doc.params:  # the documented params are exactly the accepted ones
            assert "Unknown params" not in " ".join(source_params_problems(doc.kind, {param.name: None}))
        assert source_params_problems(doc.kind, {"undocumented": 1})[0].startswith("Unknown params undocumented")


def test_the_form_help_lists_each_kind_with_an_example_and_links_the_page(researcher_client):
    study = make_study()
    html = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert "See the kinds below." not in html
    for doc in KIND_DOCS:
        assert f"<strong>{doc.kind}</strong>" in html
    assert "&quot;personas&quot;" in html  # the example JSON, escaped
    assert reverse("admin:studies_preference_source_kinds") in html


def test_the_kinds_page_explains_every_param(researcher_client, django_user_model):
    url = reverse("admin:studies_preference_source_kinds")
    html = researcher_client.get(url).content.decode()
    for doc in KIND_DOCS:
        assert f'id="kind-{doc.kind}"' in html
        for param in doc.params:
            assert f"<code>{param.name}</code>" in html
    staff = django_user_model.objects.create_user("staff-without-perms", password="pw", is_staff=True)
    researcher_client.force_login(staff)
    assert researcher_client.get(url).status_code == 403
