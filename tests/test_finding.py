"""The finding in words and as a difference on the results page (issue #25)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies import pilots
from studies.estimate import finding
from studies.estimate.results import compute_results
from studies.models import Job, Policy, Study
from tests.factories import make_item
from tests.judgments import make_judged_study, make_judgment

pytestmark = pytest.mark.django_db


def with_beta_against_the_adversary(study: Study) -> Study:
    """The judged study "tea" with beta's own adversary items, judged by the same three annotators
    on the same prompts (beta loses more often than alpha): a paired design."""
    beta = study.policies.get(name="beta")
    people = list(study.participants.filter(is_simulated=False).order_by("id"))
    for i, prompt in enumerate(study.prompts.order_by("id")[:3]):
        item = make_item(study=study, prompt=prompt, policy=beta, texts=[f"beta own {i}", f"adv {i}"],
                         counts=[(2, 0), (0, 1)])
        for j, person in enumerate(people):
            make_judgment(item=item, participant=person, pick=0 if (i + j) % 3 == 0 else 1)
    return study


def headline(results, policy):
    return next(c.interval for c in results.cells if c.policy == policy and c.opponent == "adversary")


def test_each_pair_of_policies_gets_its_headline_difference_with_a_paired_interval():
    study = with_beta_against_the_adversary(make_judged_study())
    results = compute_results(study, origin="real")
    (row,) = results.differences
    assert (row.k, row.m, row.policy_a, row.policy_b) == (2, 1, "alpha", "beta")
    assert row.interval.estimate == pytest.approx(headline(results, "alpha").estimate - headline(results, "beta").estimate)
    assert row.interval.low <= row.interval.estimate <= row.interval.high
    assert (row.interval.n_prompts, row.interval.n_annotators) == (3, 3)


def test_the_sentence_states_the_primary_policys_win_rate_and_its_difference():
    study = with_beta_against_the_adversary(make_judged_study())
    results = compute_results(study, origin="real")
    alpha = headline(results, "alpha").estimate
    diff = results.differences[0].interval
    assert results.finding.startswith(f"At k = 2, alpha beats the adversary {alpha:.2f} of the time, ")
    assert f"{abs(diff.estimate):.2f} [" in results.finding
    assert "than beta" in results.finding
    if diff.low <= 0 <= diff.high:
        assert "do not separate it from beta" in results.finding


def test_the_equilibrium_policy_is_the_primary_one_whatever_its_place():
    assert finding.primary_policy([("nlhf", "nlhf"), ("eq", Policy.Kind.MULTIPLAYER)], Policy.Kind.MULTIPLAYER) == "eq"
    assert finding.primary_policy([("a", "sample"), ("b", "nlhf")], Policy.Kind.MULTIPLAYER) == "a"
    assert finding.primary_policy([], Policy.Kind.MULTIPLAYER) is None


def test_one_policy_alone_has_no_difference_and_no_sentence():
    results = compute_results(make_judged_study(), origin="real")  # beta has no adversary cell
    assert results.differences == ()
    assert results.finding == ""


def test_the_results_page_shows_the_finding_and_the_differences(researcher_client):
    study = with_beta_against_the_adversary(make_judged_study())
    html = researcher_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert 'id="finding"' in html
    assert "alpha beats the adversary" in html
    assert 'id="differences-table"' in html


def test_a_finished_pilot_says_so_instead_of_live(researcher_client):
    study = with_beta_against_the_adversary(make_judged_study())
    study.status = Study.Status.READY
    study.save()
    pilot = pilots.create_pilot(study)
    page = reverse("studies:results", args=[pilot.slug])
    assert "Pilot, not run yet" in researcher_client.get(page).content.decode()
    job = Job.objects.create(study=pilot, kind=Job.Kind.SIMULATE, status=Job.Status.RUNNING)
    assert "Pilot running on simulated annotators" in researcher_client.get(page).content.decode()
    job.status = Job.Status.DONE
    job.save()
    html = researcher_client.get(page).content.decode()
    assert "Pilot finished" in html
    assert 'id="study-status">Live<' not in html
    # The page's poll (htmx) brings the status line along, so an open page says so without a reload.
    polled = researcher_client.get(page, headers={"HX-Request": "true"}).content.decode()
    assert '<span id="study-status" hx-swap-oob="true">Pilot finished' in polled
    assert 'id="results"' in polled
