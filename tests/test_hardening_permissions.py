"""Issue #24 finding 7: the Plan page's pilot shows judgment statistics, so it asks for the same
`view_judgment` permission as the results page (a user with `view_study` alone sees no pilot's numbers)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from tests.factories import plan_url

pytestmark = pytest.mark.django_db


def _staff_with(django_user_model, *codenames: str):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return django_user_model.objects.get(pk=user.pk)  # a fresh permission cache


def test_a_viewer_without_view_judgment_gets_no_pilots_statistics(client, django_user_model, draft_study,
                                                                   piloted_study):
    client.force_login(_staff_with(django_user_model, "view_study"))
    assert client.get(plan_url(draft_study)).status_code == 200  # the plan itself is allowed
    response = client.get(plan_url(draft_study, half_width="0.05", pilot="pilot"))
    assert response.status_code == 403
    assert b"160 judgments" not in response.content


def test_a_viewer_with_view_judgment_plans_from_the_pilot(client, django_user_model, draft_study,
                                                          piloted_study):
    client.force_login(_staff_with(django_user_model, "view_study", "view_judgment"))
    response = client.get(plan_url(draft_study, half_width="0.05", pilot="pilot"))
    assert response.status_code == 200
    assert "estimated from 160 judgments" in response.content.decode()
