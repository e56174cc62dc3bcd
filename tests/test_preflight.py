"""Fit checks before money is spent (issue #25): the design's needs against its places, and Go live's
pre-flight list, refusing the blocking problems."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies import services
from studies.estimate import plans
from studies.models import Study
from tests.annotator import open_assignment, start, url
from tests.factories import (
    admin_study_form,
    make_attention_item,
    make_live_study,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db


def ready(**overrides) -> Study:
    return make_live_study(n_items=6, status=Study.Status.READY, **overrides)


def test_the_fit_counts_the_items_that_need_judging_attention_checks_included_decided_ones_not():
    study = ready(max_participants=3)  # 6 items × 2 annotations = 12 judgments; 2 items each → 6 people
    prompt = study.prompts.first()
    make_attention_item(study=study, prompt=prompt, texts=["Fine text", "zzkq broken"], broken=1)
    policy = study.policies.get()
    decided = study.items.filter(is_attention_check=False).first()
    decided.pk = None
    decided.replicate, decided.needs_judgment = 5, False
    decided.save()
    fit = plans.design_fit(study)
    assert (fit.judgments, fit.participants, fit.places) == (14, 7, 3)
    assert not fit.fits
    assert "14 judgments (7 participants at 2 items each" in fit.sentence
    assert "only 6 (43%)" in fit.sentence
    assert "set the places to 7, or the items per participant to 5" in fit.sentence
    assert policy.pk  # the policy stays as it was


def test_a_design_that_fits_says_so_and_one_without_places_asks_for_them():
    fit = plans.design_fit(ready(max_participants=6))
    assert fit.fits
    assert fit.sentence.endswith("the design fits.")
    open_ended = plans.design_fit(ready(max_participants=None))
    assert not open_ended.fits
    assert "set the places (max participants) to 6" in open_ended.sentence


def test_before_prepare_the_fit_is_counted_from_the_design():
    study = make_study(k_values=[1, 2], annotations_per_item=3, items_per_participant=10, max_participants=2,
                       attention_check_rate=0)
    make_prompt(study=study)
    make_prompt(study=study)
    make_policy(study=study)
    fit = plans.design_fit(study)
    # 2 prompts × 2 k × 1 opponent (the adversary) × 3 annotations = 12 judgments.
    assert (fit.judgments, fit.participants) == (12, 3)
    assert "before Prepare" in fit.sentence
    assert plans.design_fit(make_study()) is None  # no policies: no design to count


def test_preflight_separates_what_blocks_from_what_warns():
    study = ready(max_participants=1, consent_text="  ", completion_code="", completion_redirect_url="")
    make_prompt(study=study, text="A prompt that got no items")
    blocking, warnings = services.preflight_problems(study)
    assert any("no consent text" in line for line in blocking)
    assert any("neither a completion code nor a completion URL" in line for line in blocking)
    assert any("1 prompt(s) have no comparison items" in line for line in warnings)
    assert any("set the places to 6" in line for line in warnings)
    with pytest.raises(services.LifecycleError, match="no consent text"):
        services.change_study_status(study=study, action="go-live")
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY


def test_warnings_alone_do_not_stop_going_live():
    study = ready(max_participants=1)
    blocking, warnings = services.preflight_problems(study)
    assert blocking == []
    assert any("no completion URL" in line for line in warnings)
    assert services.change_study_status(study=study, action="go-live").status == Study.Status.LIVE


def test_go_live_confirmation_lists_every_problem_and_refuses_the_blocking_ones(researcher_client):
    study = ready(max_participants=1, consent_text=" ")
    url = reverse("admin:studies_study_status", args=[study.pk, "go-live"])
    page = researcher_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="preflight-blocking"' in html
    assert "no consent text" in html
    assert 'id="preflight-warnings"' in html
    assert "set the places to 6" in html
    assert 'id="confirm-button"' not in html
    researcher_client.post(url)
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY


def test_plan_and_study_page_state_the_fit(researcher_client):
    study = ready(max_participants=2)
    plan = researcher_client.get(reverse("admin:studies_study_plan", args=[study.pk]))
    assert 'id="design-fit"' in plan.content.decode()
    assert "set the places to 6" in plan.content.decode()
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk]))
    assert "set the places to 6" in page.content.decode()


def test_the_admin_lets_the_code_stay_blank_and_go_live_asks_for_a_code_or_a_url(rf, researcher):
    study = ready(max_participants=6)
    form = admin_study_form(rf, researcher, study, completion_code="")
    assert form.is_valid(), form.errors
    study = form.save()
    assert study.completion_code == ""
    assert any("neither a completion code nor a completion URL" in line for line in services.preflight_problems(study)[0])

    completion_url = "https://app.prolific.com/submissions/complete?cc=C1A2B3"
    form = admin_study_form(rf, researcher, study, completion_code="", completion_redirect_url=completion_url)
    assert form.is_valid(), form.errors
    assert services.preflight_problems(form.save())[0] == []
    Study.objects.filter(pk=study.pk).update(completion_redirect_url="", per_participant_codes=True)
    assert services.preflight_problems(Study.objects.get(pk=study.pk))[0] == []  # each participant's own code


def test_a_study_finished_by_its_completion_url_shows_no_empty_code(client):
    study = make_live_study(2, items_per_participant=1, completion_code="",
                            completion_redirect_url="https://app.prolific.com/submissions/complete?cc=C1A2B3")
    participant = start(client, study)
    client.get(url("task", study))
    client.post(url("submit_judgment", study), {"assignment": open_assignment(participant).pk, "choice": 1})
    done = client.get(url("done", study)).content.decode()
    assert "Thank you! You have finished." in done
    assert 'id="completion-code"' not in done
    assert 'id="completion-link"' in done
