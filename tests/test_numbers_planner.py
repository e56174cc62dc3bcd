"""The planner's target (issue #21): the headline by default, the conservative band as an option,
named as such in `workers.stats.planning`, `manage.py plan_study` and the Plan page."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from studies.estimate.plans import plan_study, study_design
from tests.factories import make_policy, make_prompt, make_study
from workers.stats import planning

pytestmark = pytest.mark.django_db


@pytest.fixture
def study():
    study = make_study(slug="plan-me", title="Plan me", k_values=[1, 4], annotations_per_item=2,
                       items_per_participant=12)
    for i in range(5):
        make_prompt(study=study, external_id=f"p{i}")
    for name in ("sample", "nlhf", "multiplayer"):
        make_policy(study=study, name=name)
    return study


def _prompts(study, **kwargs) -> int:
    plan = planning.plan_sample_size(study_design(study), planning.literature_components(), half_width=0.05,
                                     **kwargs)
    return plan.recommended.design.prompts


def test_the_default_target_is_the_headline_and_the_band_needs_more_prompts(study):
    headline, band = _prompts(study), _prompts(study, target="band")
    assert headline == _prompts(study, target="headline")
    assert band > headline
    # The headline is the adversary cells: the default plan brings every one of them to ±0.05.
    plan = planning.plan_sample_size(study_design(study), planning.literature_components(), half_width=0.05)
    assert plan.target == "headline"
    adversary = [c for c in plan.recommended.cells if c.cell.opponent == planning.ADVERSARY]
    assert max(c.half_width for c in adversary) <= 0.05
    assert max(r.half_width for r in plan.recommended.robust) > 0.05


@pytest.mark.parametrize(("old", "new"), [("cell", "headline"), ("robust", "band")])
def test_the_targets_old_names_still_mean_the_same(study, old, new):
    assert _prompts(study, target=old) == _prompts(study, target=new)
    assert plan_study(study, half_width=0.05, target=old).plan.target == new


def test_an_unknown_target_is_refused(study):
    with pytest.raises(ValueError, match="target must be one of"):
        _prompts(study, target="everything")


def _command(*args) -> str:
    out = StringIO()
    call_command("plan_study", "plan-me", *args, stdout=out)
    return out.getvalue()


def test_the_command_plans_for_the_headline_by_default_and_names_the_band(study):
    default, band = _command(), _command("--target", "band")
    assert "every adversary cell (the headline f̂(k)" in default
    assert f"Recommended: {_prompts(study):,} prompts" in default
    assert "every conservative band (the min over every opponent" in band
    assert f"Recommended: {_prompts(study, target='band'):,} prompts" in band
    assert _command("--target", "robust") == band


def test_the_plan_page_plans_for_the_headline_by_default_and_offers_the_band(researcher_client, study):
    url = reverse("admin:studies_study_plan", args=[study.pk])
    html = researcher_client.get(url).content.decode()
    assert "for the headline</h2>" in html
    assert f"{_prompts(study):,} prompts" in html
    assert "the conservative band: the min over every opponent" in html  # the option, by name
    band = researcher_client.get(url, {"half_width": "0.05", "target": "band"}).content.decode()
    assert "for the conservative band</h2>" in band
    assert f"{_prompts(study, target='band'):,} prompts" in band
    old_link = researcher_client.get(url, {"half_width": "0.05", "target": "robust"})
    assert old_link.status_code == 200
    assert "for the conservative band</h2>" in old_link.content.decode()
