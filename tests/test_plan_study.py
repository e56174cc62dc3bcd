"""Planning a study from the database: `manage.py plan_study` and the admin's "Plan" page (issue #16)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse

from studies.estimate.plans import predicted_cell_means, study_design
from studies.models import Policy
from tests.conftest import DRAFT_POLICIES
from tests.factories import (
    make_prompt,
    make_study,
    plan_url,
)
from workers.stats import planning

pytestmark = pytest.mark.django_db

def plan_output(*args) -> str:
    out = StringIO()
    call_command("plan_study", *args, stdout=out)
    return out.getvalue()


# --- The command -------------------------------------------------------------------------------------


def test_command_prints_the_current_design_and_the_design_that_reaches_the_target(draft_study):
    text = plan_output("draft", "--half-width", "0.05", "--price", "2.50")
    expected = planning.plan_sample_size(study_design(draft_study), planning.literature_components(),
                                         half_width=0.05, price=2.5)
    best = expected.recommended.design
    assert "literature defaults" in text
    assert f"Current design: {study_design(draft_study).judgments:,} judgments" in text
    assert f"Recommended: {best.prompts:,} prompts at 2 annotations per item" in text
    assert f"{best.participants:,} participants, cost {expected.recommended_cost:,.2f}" in text
    assert f"fewer than {expected.prompts_floor:,} prompts" in text
    assert best.prompts > 5


def test_command_without_a_price_prints_no_cost(draft_study):
    text = plan_output("draft", "--target", "cell")
    assert "cost" not in text.lower()
    assert "every adversary cell" in text


def test_command_uses_the_studys_own_judgments_once_it_has_enough(piloted_study):
    text = plan_output("pilot", "--half-width", "0.1")
    assert "estimated from 160 judgments" in text
    assert "the population model's predicted win rates (32 items)" in text


def test_command_takes_the_variance_components_from_a_named_pilot(draft_study, piloted_study):
    text = plan_output("draft", "--pilot", "pilot")
    assert "estimated from 160 judgments of “Pilot” (pilot)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "No study"),
        (["draft", "--half-width", "abc"], "must be a number"),
        (["draft", "--half-width", "0.7"], r"\(0, 0.5\]"),
        (["draft", "--price", "-1"], "non-negative"),
        (["draft", "--pilot", "draft-too"], "fewer than 30 judgments"),
        (["draft", "--pilot", "draft-too", "--defaults"], "not both"),
    ],
)
def test_command_refuses_bad_input_with_a_clear_error(draft_study, args, message):
    make_study(slug="draft-too")
    with pytest.raises(CommandError, match=message):
        plan_output(*args)


def test_a_study_without_policies_cannot_be_planned():
    make_study(slug="empty")
    with pytest.raises(CommandError, match="no policies"):
        plan_output("empty")


def test_cell_means_are_the_items_predicted_win_rates(piloted_study):
    means, source = predicted_cell_means(piloted_study)
    assert means[("alpha", 2, "adversary")] == pytest.approx(0.7)
    assert means[("alpha", 2, "beta")] == pytest.approx(0.5)
    assert "32 items" in source


def test_the_design_has_the_pipelines_cells(draft_study):
    design = study_design(draft_study)
    assert design.prompts == 5
    assert len(design.cells) == len(DRAFT_POLICIES) * 2 * len(DRAFT_POLICIES)  # adversary + the two other policies


# --- The page ---------------------------------------------------------------------------------------


def test_plan_page_is_linked_from_the_study_admin_page(researcher_client, draft_study):
    page = researcher_client.get(reverse("admin:studies_study_change", args=[draft_study.pk]))
    assert plan_url(draft_study) in page.content.decode()


def test_plan_page_shows_the_current_design_and_the_target_with_its_cost(researcher_client, draft_study):
    response = researcher_client.get(plan_url(draft_study, half_width="0.05", price="2.50"))
    assert response.status_code == 200
    html = response.content.decode()
    expected = planning.plan_sample_size(study_design(draft_study), planning.literature_components(),
                                         half_width=0.05, price=2.5)
    best = expected.recommended.design
    assert f"{best.prompts:,} prompts" in html
    assert f"{best.participants:,} participants" in html
    assert f"{expected.recommended_cost:,.2f}" in html
    assert "the whole [0, 1]" in html  # five prompts: the f̂(k) bands say nothing yet
    assert 'id="plan-alternatives"' in html


def test_plan_page_without_parameters_plans_for_the_default_target(researcher_client, draft_study):
    response = researcher_client.get(plan_url(draft_study))
    assert response.status_code == 200
    assert "To reach ±0.050" in response.content.decode()


def test_plan_page_forbids_staff_without_the_view_permission(client, django_user_model, draft_study):
    staff = django_user_model.objects.create_user("helper", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(plan_url(draft_study)).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_study"))
    client.force_login(django_user_model.objects.get(pk=staff.pk))  # fresh permission cache
    assert client.get(plan_url(draft_study)).status_code == 200


def test_plan_page_sends_non_staff_to_the_admin_login(client, outsider, draft_study):
    client.force_login(outsider)
    response = client.get(plan_url(draft_study))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


@pytest.mark.parametrize(
    "params",
    [
        {"half_width": "abc"},
        {"half_width": "0.9"},
        {"half_width": "0.05", "price": "-1"},
        {"half_width": "0.05", "pilot": "no-such-study"},
        {"half_width": "0.05", "target": "everything"},
    ],
)
def test_plan_page_answers_bad_input_with_400_and_the_form(researcher_client, draft_study, params):
    response = researcher_client.get(plan_url(draft_study, **params))
    assert response.status_code == 400
    html = response.content.decode()
    assert 'class="errorlist' in html
    assert 'id="plan-recommended"' not in html


def test_plan_page_with_a_pilot_without_judgments_says_why(researcher_client, draft_study):
    make_study(slug="empty-pilot")
    response = researcher_client.get(plan_url(draft_study, half_width="0.05", pilot="empty-pilot"))
    assert response.status_code == 400
    assert "fewer than 30 judgments" in response.content.decode()


def test_plan_page_uses_a_pilots_judgments(researcher_client, draft_study, piloted_study):
    response = researcher_client.get(plan_url(draft_study, half_width="0.05", pilot="pilot"))
    assert response.status_code == 200
    assert "estimated from 160 judgments" in response.content.decode()


def test_plan_page_explains_a_study_without_policies(researcher_client):
    study = make_study(slug="bare")
    response = researcher_client.get(plan_url(study))
    assert response.status_code == 200
    assert "no policies yet" in response.content.decode()


def test_plan_page_escapes_the_study_title_and_policy_names(researcher_client):
    study = make_study(slug="xss", title="<script>alert('t')</script>")
    Policy.objects.create(study=study, name="<b>bold</b>", kind=Policy.Kind.SAMPLE)
    make_prompt(study=study)
    html = researcher_client.get(plan_url(study)).content.decode()
    assert "<script>alert(" not in html
    assert "<b>bold</b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


def test_plan_page_only_answers_get(researcher_client, draft_study):
    assert researcher_client.post(plan_url(draft_study), {"half_width": "0.05"}).status_code == 405
