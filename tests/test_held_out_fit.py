"""A held-out share that fits the pool (issue #25): none below MIN_POOL_FOR_HELD_OUT texts, a warning
when a prompt's best text was held out, the held-out candidates and rounded figures in the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies.models import PolicyFit, PreferenceSource
from studies.steps import fit, held_out_check, population
from tests.csv_study import utilities_csv
from tests.factories import (
    make_candidate,
    make_generator,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db


def pool_study(n_texts: int, **overrides):
    """One prompt with `n_texts` candidates; three types that all rank text 0 first (the best text)."""
    generator = make_generator()
    study = make_study(generator=generator, k_values=[1], attention_check_rate=0.0, held_out_fraction=0.25,
                       **overrides)
    prompt = make_prompt(study=study, external_id="p0")
    for j in range(n_texts):
        make_candidate(prompt=prompt, generator=generator, sample_index=j)
    make_policy(study=study, name="multiplayer", kind="multiplayer")
    utilities = {name: [n_texts - j + shift * (j % 2) for j in range(n_texts)] for name, shift in
                 (("a", 0), ("b", 0.5), ("c", 0.25))}
    PreferenceSource.objects.create(study=study, kind="csv", data=utilities_csv([prompt], utilities))
    population.build_population(prompt, list(study.preference_sources.all()))
    return study, prompt


@pytest.mark.parametrize(("n_texts", "held"), [(5, 0), (7, 0), (8, 2), (12, 3)])
def test_pools_below_the_minimum_hold_nothing_out(n_texts, held):
    assert fit.MIN_POOL_FOR_HELD_OUT == 8
    study, prompt = pool_study(n_texts)
    columns = fit.held_out_columns(study, population.load_population(prompt))
    assert len(columns.held_out) == held
    assert len(columns.fitted) == n_texts - held


def fit_holding_out(study, prompt, candidate_ids):
    return PolicyFit.objects.create(
        policy=study.policies.get(), prompt=prompt, k=1, candidate_ids=[], probabilities=[0.1 + 0.2, 0.7],
        certificate_kind="none", predicted_robust_win_rate=0.1 + 0.2, pool_robust_win_rate=2 / 3,
        solver_stats={"held_out_candidates": candidate_ids},
    )


def test_the_study_page_warns_when_the_best_text_was_held_out(researcher_client):
    study, prompt = pool_study(8)
    best = prompt.candidates.get(sample_index=0)
    other = prompt.candidates.get(sample_index=5)
    fit_holding_out(study, prompt, [other.pk])
    assert held_out_check.best_held_out(study) == []
    assert held_out_check.best_held_out_warning(study) == ""
    PolicyFit.objects.all().delete()
    fit_holding_out(study, prompt, [other.pk, best.pk])
    (found,) = held_out_check.best_held_out(study)
    assert (found.prompt_id, found.candidate_id, found.held_out, found.pool) == (prompt.pk, best.pk, 2, 8)
    html = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert 'id="held-out-warning"' in html
    assert f"prompt #{prompt.pk} (candidate #{best.pk}, 2 of 8 held out)" in html


def test_policy_fits_show_rounded_figures_and_their_held_out_candidates(researcher_client):
    study, prompt = pool_study(8)
    held = list(prompt.candidates.order_by("id").values_list("pk", flat=True)[:2])
    fitted = fit_holding_out(study, prompt, held)
    listing = researcher_client.get(reverse("admin:studies_policyfit_changelist")).content.decode()
    assert "0.30000000000000004" not in listing
    assert "0.300" in listing
    assert "0.667" in listing
    assert f"#{held[0]}</a>" in listing
    detail = researcher_client.get(reverse("admin:studies_policyfit_change", args=[fitted.pk])).content.decode()
    assert "0.30000000000000004" not in detail
    assert "0.300, 0.700" in detail
