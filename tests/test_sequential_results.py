"""The results page's anytime-valid interval beside the headline (studies.estimate.results, #22)."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse

from studies.estimate.results import compute_results
from workers.stats import sequential

pytestmark = pytest.mark.django_db


def test_the_headline_carries_the_anytime_interval_of_its_prompt_means(judged_study):
    results = compute_results(judged_study)
    (row,) = results.robust
    assert row.headline is not None
    assert row.anytime is not None
    # The judged study: the adversary cell's credits per prompt (3 prompts, 3 judgments each).
    assert row.anytime.n_prompts == row.headline.n_prompts == 3
    assert row.anytime.estimate == pytest.approx(
        row.headline.estimate
    )  # 3 judgments on every prompt
    assert row.anytime.early
    assert row.anytime.planned_units == judged_study.prompts.count()
    assert row.anytime.low <= row.headline.low
    assert row.anytime.high >= row.headline.high


def test_anytime_interval_is_the_sequence_at_the_last_prompt() -> None:
    credit = np.array([1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0])
    prompts = np.array([3, 3, 7, 7, 9, 9, 9])
    got = sequential.anytime_interval(credit, prompts, planned_units=20)
    units = np.array([0.5, 0.75, 2 / 3])
    cs = sequential.confidence_sequence(units, rho=sequential.tuned_rho(20, sd=0.5))
    assert got is not None
    assert (got.estimate, got.low, got.high) == pytest.approx(
        (cs.estimate[-1], max(0.0, cs.low[-1]), min(1.0, cs.high[-1]))
    )
    assert sequential.anytime_interval([], [], planned_units=5) is None


def test_results_page_shows_the_anytime_column(researcher_client, judged_study):
    response = researcher_client.get(
        reverse("studies:results", args=[judged_study.slug])
    )
    assert response.status_code == 200
    assert "anytime-valid" in response.content.decode()
    assert (
        "too few" in response.content.decode()
    )  # 3 prompts: the page says not to trust it yet
