"""Reviewed judgments only (issue #21): participants rejected in review or ended for failed attention
checks are left out of estimates, summaries and the planner's components by default; one switch
includes them, the page says how many were left out and why, the CSV records the choice, and the
results snapshots key on it. Also: an adversary found by search is flagged with its gap bound."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from studies.estimate import export, results_cache
from studies.estimate.plans import judgment_components
from studies.estimate.results import (
    SUMMARY_HEADER,
    compute_results,
    judgments_for,
    scope_key,
    summary_rows,
    unreviewed_judgments,
)
from studies.models import Participant, PolicyFit, ResultsSnapshot, Study
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)
from tests.judgments import make_judgment

pytestmark = pytest.mark.django_db

N_PROMPTS = 8  # 32 reviewed judgments: enough for the planner (MIN_JUDGMENTS 30)
REVIEWED = (N_PROMPTS - 1) / N_PROMPTS
EVERYONE = 4 * (N_PROMPTS - 1) / (6 * N_PROMPTS)


@pytest.fixture
def study():
    """N prompts, one adversary item each. Four reviewed people pick the policy's text on every
    item but the first; one rejected in review and one ended for failed attention checks always
    pick the opponent's. So the reviewed win rate is (N - 1)/N and with everyone 4(N - 1)/(6N)."""
    study = make_study(slug="reviewed", k_values=[1], status=Study.Status.LIVE)
    policy = make_policy(study=study, name="alpha")
    good = [make_participant(study=study) for _ in range(4)]
    rejected = make_participant(study=study, review_status=Participant.Review.REJECTED)
    ended = make_participant(study=study, status=Participant.Status.ENDED)
    for i in range(N_PROMPTS):
        prompt = make_prompt(study=study, external_id=f"p{i}", text=f"Prompt {i}")
        item = make_item(study=study, prompt=prompt, policy=policy, texts=[f"mine {i}", f"theirs {i}"],
                         counts=[(1, 0), (0, 1)], k=1)
        for person in good:
            make_judgment(item=item, participant=person, pick=1 if i == 0 else 0)
        make_judgment(item=item, participant=rejected, pick=1)
        make_judgment(item=item, participant=ended, pick=1)
        PolicyFit.objects.create(policy=policy, prompt=prompt, k=1, candidate_ids=[], probabilities=[],
                                 certificate_kind="none", predicted_robust_win_rate=0.7,
                                 solver_stats={"adversary_exact": True, "adversary_gap": 0.0})
    return study


def _headline(results):
    (row,) = results.robust
    return row.headline


def test_judgments_for_leaves_out_rejected_and_ended_participants_unless_asked(study):
    assert judgments_for(study).count() == 4 * N_PROMPTS
    assert judgments_for(study, include_unreviewed=True).count() == 6 * N_PROMPTS
    assert judgments_for(study, "all").count() == 4 * N_PROMPTS
    assert unreviewed_judgments(study) == {"rejected": N_PROMPTS, "ended": N_PROMPTS}


def test_a_participant_both_rejected_and_ended_counts_once_as_rejected(study):
    Participant.objects.filter(review_status=Participant.Review.REJECTED).update(status=Participant.Status.ENDED)
    assert unreviewed_judgments(study) == {"rejected": N_PROMPTS, "ended": N_PROMPTS}
    Participant.objects.filter(status=Participant.Status.ENDED).update(review_status=Participant.Review.REJECTED)
    assert unreviewed_judgments(study) == {"rejected": 2 * N_PROMPTS, "ended": 0}


def test_estimates_count_reviewed_judgments_by_default_and_everyone_with_the_switch(study):
    reviewed, everyone = compute_results(study), compute_results(study, include_unreviewed=True)
    assert reviewed.n_judgments == 4 * N_PROMPTS
    assert _headline(reviewed).estimate == pytest.approx(REVIEWED)
    assert _headline(reviewed).n_annotators == 4
    assert everyone.n_judgments == 6 * N_PROMPTS
    assert _headline(everyone).estimate == pytest.approx(EVERYONE)
    assert reviewed.unreviewed_text == (f"Left out: {2 * N_PROMPTS} judgments ({N_PROMPTS} of participants rejected in "
                                        f"review; {N_PROMPTS} of participants ended for failed attention checks).")
    assert everyone.unreviewed_text.startswith(f"Included on request: {2 * N_PROMPTS} judgments")


def _page(client, study, **params):
    return client.get(reverse("studies:results", args=[study.slug]), params).content.decode()


def test_the_results_page_says_what_was_left_out_and_offers_the_switch(researcher_client, study):
    page = _page(researcher_client, study)
    assert f"{4 * N_PROMPTS} judgments from 4 annotators" in page
    assert f"Left out: {2 * N_PROMPTS} judgments" in page
    assert "rejected in review" in page
    assert "ended for failed attention checks" in page
    assert "unreviewed=include" in page
    included = _page(researcher_client, study, unreviewed="include")
    assert f"{6 * N_PROMPTS} judgments from 6 annotators" in included
    assert "Included on request" in included
    # One snapshot per origin and switch: neither serves the other.
    assert set(ResultsSnapshot.objects.filter(study=study).values_list("origin", flat=True)) == {"real", "real+incl"}
    assert f"{4 * N_PROMPTS} judgments from 4 annotators" in _page(researcher_client, study)
    assert f"{6 * N_PROMPTS} judgments from 6 annotators" in _page(researcher_client, study, unreviewed="include")


def test_a_review_decision_makes_the_snapshot_stale(researcher_client, study):
    _page(researcher_client, study)
    snapshot, current = results_cache.current_snapshot(study, scope_key("real", False))
    assert current
    good = Participant.objects.filter(study=study, review_status=Participant.Review.PENDING).exclude(
        status=Participant.Status.ENDED
    )
    Participant.objects.filter(pk=good.order_by("id").first().pk).update(review_status=Participant.Review.REJECTED)
    assert not results_cache.current_snapshot(study, "real")[1]
    assert f"{3 * N_PROMPTS} judgments from 3 annotators" in _page(researcher_client, study)


def _summary(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _export(client, study, table, **params) -> str:
    response = client.get(reverse("studies:export", args=[study.slug, table]), params)
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode()


def test_the_summary_csv_records_the_switch_on_every_row(researcher_client, study):
    reviewed = _summary(_export(researcher_client, study, "summary"))
    everyone = _summary(_export(researcher_client, study, "summary", unreviewed="include"))
    assert {row["unreviewed_included"] for row in reviewed} == {"false"}
    assert {row["unreviewed_included"] for row in everyone} == {"true"}
    assert {row["unreviewed_judgments"] for row in reviewed + everyone} == {str(2 * N_PROMPTS)}
    head = [row for row in reviewed if row["row"] == "headline_adversary_cell"][0]
    assert float(head["estimate"]) == pytest.approx(REVIEWED)
    head = [row for row in everyone if row["row"] == "headline_adversary_cell"][0]
    assert float(head["estimate"]) == pytest.approx(EVERYONE)


def test_the_export_command_has_the_switch(study, tmp_path):
    paths = {}
    for name, extra in (("default", ()), ("included", ("--include-unreviewed",))):
        paths[name] = tmp_path / f"{name}.csv"
        call_command("export_study", study.slug, "--table", "summary", "--output", str(paths[name]), *extra)
    assert {r["unreviewed_included"] for r in _summary(paths["default"].read_text())} == {"false"}
    assert {r["unreviewed_included"] for r in _summary(paths["included"].read_text())} == {"true"}


def test_the_judgments_table_holds_everyone_and_says_who_is_left_out_by_default(researcher_client, study):
    rows = _summary(_export(researcher_client, study, "judgments"))
    assert len(rows) == 6 * N_PROMPTS
    reasons = [row["left_out_by_default"] for row in rows]
    assert reasons.count("") == 4 * N_PROMPTS
    assert reasons.count("rejected in review") == N_PROMPTS
    assert reasons.count("ended for failed attention checks") == N_PROMPTS
    assert export.JUDGMENT_HEADER[-1] == "left_out_by_default"


def test_the_planners_components_leave_them_out(study):
    components = judgment_components(study)
    assert components is not None
    assert components.n_judgments == 4 * N_PROMPTS


def test_a_searched_adversary_is_flagged_on_the_page_and_in_the_summary(researcher_client, study):
    fits = PolicyFit.objects.filter(policy__study=study).order_by("prompt_id")
    for fit, gap in zip(fits[:2], (0.01, 0.03), strict=True):
        fit.solver_stats = {"adversary_exact": False, "adversary_gap": gap}
        fit.save()
    results = compute_results(study)
    (row,) = results.robust
    assert row.search is not None
    assert (row.search.searched, row.search.prompts) == (2, N_PROMPTS)
    assert row.search.gap_bound == pytest.approx((0.01 + 0.03) / N_PROMPTS)
    assert row.search.gap_max == pytest.approx(0.03)
    by_row = {r[0]: dict(zip(SUMMARY_HEADER, r, strict=True)) for r in summary_rows(results)}
    assert by_row["headline_adversary_cell"]["adversary_searched_prompts"] == 2
    assert by_row["headline_adversary_cell"]["adversary_gap_bound"] == pytest.approx(0.04 / N_PROMPTS)
    page = _page(researcher_client, study)
    assert f"searched adversary, gap ≤ {0.04 / N_PROMPTS:.3f}" in page
    assert f"adversary found by search (not enumeration) on 2 of {N_PROMPTS} prompts" in page


def test_an_enumerated_adversary_is_not_flagged(researcher_client, study):
    (row,) = compute_results(study).robust
    assert row.search is None
    by_row = {r[0]: dict(zip(SUMMARY_HEADER, r, strict=True)) for r in summary_rows(compute_results(study))}
    assert by_row["headline_adversary_cell"]["adversary_searched_prompts"] == 0
    assert "searched adversary" not in _page(researcher_client, study)
