"""The study results (DB → analysis) and the staff results page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies.estimate.results import compute_results, summary_rows
from studies.models import ComparisonItem, Study
from tests.factories import (
    make_study,
)

pytestmark = pytest.mark.django_db


def cell(results, opponent):
    (row,) = [row for row in results.cells if row.opponent == opponent]
    return row


def test_win_rates_are_mean_credit_per_policy_k_and_opponent(judged_study):
    results = compute_results(judged_study)
    adversary, beta = cell(results, "adversary"), cell(results, "beta")
    assert adversary.interval.estimate == pytest.approx((3 * 0.5 + 6 * 1) / 9)
    assert beta.interval.estimate == pytest.approx(4 / 9)
    assert (adversary.interval.n, adversary.interval.n_prompts, adversary.interval.n_annotators) == (9, 3, 3)
    assert adversary.interval.low <= adversary.interval.estimate <= adversary.interval.high


def test_predicted_win_rate_is_the_mean_over_the_judged_items(judged_study):
    results = compute_results(judged_study)
    assert cell(results, "adversary").predicted == pytest.approx(0.8)
    assert cell(results, "beta").predicted == pytest.approx(0.5)


def test_the_conservative_summary_is_the_worst_opponent_and_the_headline_the_adversary_cell(judged_study):
    results = compute_results(judged_study)
    (robust,) = results.robust
    assert (robust.policy, robust.k, robust.m) == ("alpha", 2, 1)
    assert robust.result.worst_opponent == "beta"
    assert robust.result.estimate == pytest.approx(4 / 9)
    assert robust.result.low <= cell(compute_results(judged_study), "beta").interval.low
    assert robust.predicted == pytest.approx(0.7)
    assert robust.bound == (pytest.approx(2 / 3), pytest.approx(2 / 3))  # m = 1: guarantee = ceiling
    # The headline is the pre-registered adversary cell with its own two-way interval, not the min.
    assert robust.headline == cell(results, "adversary").interval
    assert robust.headline.estimate == pytest.approx(5 / 6)


def test_attention_checks_are_kept_out_of_win_rates_and_counted_as_failures(judged_study):
    results = compute_results(judged_study)
    assert (results.attention.count, results.attention.n) == (1, 2)
    assert all(row.opponent != "attention" for row in results.cells)


def test_cant_decide_is_excluded_or_credited_as_a_tie_by_the_study_rule(judged_study):
    excluded = compute_results(judged_study)
    assert excluded.n_excluded == 1
    assert cell(excluded, "adversary").interval.n == 9
    judged_study.cant_decide_analysis = Study.CantDecide.TIE
    judged_study.save()
    tied = compute_results(judged_study)
    assert tied.n_excluded == 0
    assert cell(tied, "adversary").interval.estimate == pytest.approx((7.5 + 2 / 3) / 10)


def test_simulated_annotators_are_left_out_unless_asked_for(judged_study):
    assert cell(compute_results(judged_study), "adversary").interval.n == 9
    assert cell(compute_results(judged_study, origin="all"), "adversary").interval.n == 10
    assert cell(compute_results(judged_study, origin="simulated"), "adversary").interval.n == 1


def test_quality_stats_count_positions_agreement_and_time(judged_study):
    results = compute_results(judged_study)
    assert results.position.n == 18
    assert sum(results.position.picked) == 18
    assert results.position.chance_rate == pytest.approx((0.5, 0.5))
    assert results.agreement.n_items == 6
    assert results.agreement.chance == pytest.approx(0.5)
    assert results.timing.median_s == pytest.approx(1.5)


def test_summary_rows_hold_cells_then_robust_rows(judged_study):
    rows = list(summary_rows(compute_results(judged_study)))
    assert [row[0] for row in rows] == ["win_rate", "win_rate", "headline_adversary_cell", "robust_min_over_opponents"]
    assert rows[-1][3] == "worst: beta"


def test_results_page_sends_anonymous_visitors_to_the_admin_login(client, judged_study):
    response = client.get(reverse("studies:results", args=[judged_study.slug]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_results_page_is_closed_to_non_staff(client, outsider, judged_study):
    client.force_login(outsider)
    for name in ("studies:results", "studies:results_plot"):
        response = client.get(reverse(name, args=[judged_study.slug]))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_results_page_shows_the_table_plot_and_quality_to_staff(researcher_client, judged_study):
    response = researcher_client.get(reverse("studies:results", args=[judged_study.slug]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html
    assert 'id="robust-table"' in html
    assert 'id="cells-table"' in html
    assert 'id="position-table"' in html
    assert reverse("studies:results_plot", args=[judged_study.slug]) in html
    assert "0.444" in html
    assert "0.833" in html
    assert 'hx-trigger="every 5s"' in html
    assert reverse("studies:export", args=[judged_study.slug, "judgments"]) in html


def test_htmx_refresh_returns_only_the_results_partial(researcher_client, judged_study):
    response = researcher_client.get(
        reverse("studies:results", args=[judged_study.slug]), headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert html.strip().startswith('<div id="results"')


def test_results_page_stops_polling_when_the_study_is_closed(researcher_client, judged_study):
    Study.objects.filter(pk=judged_study.pk).update(status=Study.Status.CLOSED)
    html = researcher_client.get(reverse("studies:results", args=[judged_study.slug])).content.decode()
    assert "hx-trigger" not in html


def test_results_page_escapes_opponent_labels(researcher_client, judged_study):
    ComparisonItem.objects.filter(opponent_label="beta").update(opponent_label="<script>alert(1)</script>")
    html = researcher_client.get(reverse("studies:results", args=[judged_study.slug])).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_plot_is_an_svg_drawn_on_the_server(researcher_client, judged_study):
    response = researcher_client.get(reverse("studies:results_plot", args=[judged_study.slug]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    body = response.content.decode()
    assert "<svg" in body
    assert "<script" not in body
    assert 'href="http' not in body


def test_results_page_renders_for_a_study_without_judgments(researcher_client):
    study = make_study(slug="empty")
    response = researcher_client.get(reverse("studies:results", args=[study.slug]))
    assert response.status_code == 200
    assert 'id="no-results"' in response.content.decode()
    assert researcher_client.get(reverse("studies:results_plot", args=[study.slug])).status_code == 200


def test_admin_study_page_links_to_results_and_downloads(researcher_client, judged_study):
    html = researcher_client.get(reverse("admin:studies_study_change", args=[judged_study.pk])).content.decode()
    assert reverse("studies:results", args=[judged_study.slug]) in html
    assert reverse("studies:export", args=[judged_study.slug, "candidates"]) in html


def test_admin_action_downloads_the_judgments_of_one_study(researcher_client, judged_study):
    response = researcher_client.post(
        reverse("admin:studies_study_changelist"),
        {"action": "download_judgments", "_selected_action": [judged_study.pk]},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("studies:export", args=[judged_study.slug, "judgments"])
