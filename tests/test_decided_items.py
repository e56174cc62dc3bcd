"""Items decided by construction: every draw of both sides is one text, so the credit is k/(k+m).

The pipeline marks them, the annotator flow never assigns them, and the results and exports still
count them (studies/estimate/results.py explains the weighting).
"""

from __future__ import annotations

import csv
import io
import math

import pytest
from django.urls import reverse
from django.utils import timezone

from studies import reproduction
from studies.estimate import export
from studies.estimate.results import SUMMARY_HEADER, compute_results, summary_rows
from studies.judgment import assign, flow, picking
from studies.judgment.flow import StudyUnavailable
from studies.models import Assignment, ComparisonItem, Judgment, Participant, Study
from studies.simulated_annotators import annotators_to_fill
from studies.steps import items
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)
from tests.judgments import make_judgment

pytestmark = pytest.mark.django_db


# --- The pipeline marks them ------------------------------------------------------------------


def built(alpha: float = 0.6, **design) -> Study:
    """A live study on theory.md §7's two-response majority, itemised by the pipeline.

    With α = 0.6 NLHF is δ_a: at k = 1 its adversary is a itself (g(a) = ½ > 0.4), so every
    NLHF k = 1 item shows a alone; at k = 2 the adversary is b, so those items show two texts.
    """
    fields = {"prompts": 2, "k_values": (1, 2), "replicates": 3, "policies": ("nlhf", "multiplayer"),
              "attention_check_rate": 0.25}
    fields.update(design)
    return reproduction.build_study(reproduction.majority(alpha), reproduction.ReproductionDesign(**fields), slug=f"maj-{alpha:g}")


def rebuild(study: Study) -> items.ItemCounts:
    return items.build_items(study)


def test_the_pipeline_marks_items_that_show_a_single_text_as_decided_at_k_over_k_plus_m():
    study = built()
    regular = ComparisonItem.objects.filter(study=study, is_attention_check=False).prefetch_related("shown")
    for item in regular:
        shown = list(item.shown.all())
        assert item.needs_judgment == (len(shown) > 1)
        if not item.needs_judgment:
            assert (shown[0].count_policy, shown[0].count_opponent) == (item.k, item.m)
            assert item.decided_credit == pytest.approx(item.k / (item.k + item.m))
            assert item.predicted_win_rate == pytest.approx(item.k / (item.k + item.m))
        else:
            assert item.decided_credit is None
    nlhf = regular.filter(policy__name="nlhf", opponent_label=ComparisonItem.ADVERSARY)
    assert not nlhf.filter(k=1, needs_judgment=True).exists()
    assert not nlhf.filter(k=2, needs_judgment=False).exists()
    judged = regular.filter(needs_judgment=True).count()
    assert 0 < judged < regular.count()
    # Attention checks always need a person, and their rate is of the items people see.
    checks = ComparisonItem.objects.filter(study=study, is_attention_check=True)
    assert checks.count() == round(0.25 / 0.75 * judged)
    assert not checks.filter(needs_judgment=False).exists()


def test_rebuilding_keeps_the_decided_flags_and_changes_nothing():
    study = built()
    before = sorted(ComparisonItem.objects.filter(study=study).values_list("id", "needs_judgment"))
    counts = rebuild(study)
    assert counts.created == counts.replaced == counts.removed == 0
    assert sorted(ComparisonItem.objects.filter(study=study).values_list("id", "needs_judgment")) == before


def test_a_rebuild_marks_old_single_text_items_unless_someone_was_given_them():
    study = built()
    decided = list(ComparisonItem.objects.filter(study=study, needs_judgment=False))
    ComparisonItem.objects.filter(pk__in=[i.pk for i in decided]).update(needs_judgment=True)  # built before the flag
    Assignment.objects.create(participant=make_participant(study=study), item=decided[0])

    counts = rebuild(study)

    assert counts.created == counts.replaced == 0
    assert ComparisonItem.objects.get(pk=decided[0].pk).needs_judgment  # shown already: never altered
    assert not ComparisonItem.objects.filter(pk__in=[i.pk for i in decided[1:]], needs_judgment=True).exists()


# --- The annotator flow never assigns them ------------------------------------------------------


def live_mixed(*, judged: int = 2, decided: int = 3, **overrides) -> Study:
    fields = {"status": Study.Status.LIVE, "annotations_per_item": 2, "items_per_participant": 10,
              "attention_check_rate": 0, "k_values": [2]}
    fields.update(overrides)
    study = make_study(**fields)
    policy = make_policy(study=study, name="alpha")
    for i in range(judged):
        make_item(study=study, prompt=make_prompt(study=study), policy=policy, texts=[f"a{i}", f"b{i}"],
                  counts=[(2, 0), (0, 1)])
    for i in range(decided):
        make_item(study=study, prompt=make_prompt(study=study), policy=policy, texts=[f"same {i}"],
                  counts=[(2, 1)], needs_judgment=False, predicted_win_rate=2 / 3)
    return study


def active(study: Study) -> Participant:
    return make_participant(study=study, status=Participant.Status.ACTIVE, consent_at=timezone.now())


def test_decided_items_are_never_assigned_nor_counted_in_progress():
    study = live_mixed()
    person = active(study)
    assert assign.progress(person).total == 2
    assigned = []
    while (assignment := assign.assign_next_item(participant=person)) is not None:
        assigned.append(assignment.item)
        picking.record_judgment(participant=person, assignment_id=assignment.pk, position=1)
    assert len(assigned) == 2
    assert all(item.needs_judgment for item in assigned)
    person.refresh_from_db()
    assert person.status == Participant.Status.COMPLETED  # nothing left: they get the code


def test_a_study_whose_items_are_all_decided_takes_no_newcomers(client):
    study = live_mixed(judged=0)
    with pytest.raises(StudyUnavailable) as raised:
        flow.ensure_open_for_newcomers(study)
    assert raised.value.reason == "full"
    response = client.get(reverse("studies:join", args=[study.slug]), {"invite": study.invite_token})
    assert response.status_code == 200
    assert b"This study is full" in response.content


def test_simulated_annotators_are_sized_for_the_items_that_need_judgment():
    study = live_mixed(judged=3, decided=7, items_per_participant=2)
    assert annotators_to_fill(study) == math.ceil(3 * 2 / 2)


# --- The results count them at their credit ----------------------------------------------------

# Canonical slot picked by u1, u2, u3 on the three judged items: slot 0 credits ½, slot 1 credits 1.
PICKS = {"u1": [0, 1, 1], "u2": [1, 1, 0], "u3": [1, 0, 1]}
JUDGED = [0.5, 1, 1, 1, 1, 0.5, 1, 0.5, 1]  # the credits, prompt by prompt


@pytest.fixture
def study_with_decided():
    study = make_study(slug="decided", k_values=[2], status=Study.Status.LIVE, annotations_per_item=3)
    alpha = make_policy(study=study, name="alpha")
    beta = make_policy(study=study, name="beta")
    people = {name: make_participant(study=study) for name in PICKS}
    prompts = [make_prompt(study=study, external_id=f"p{i}") for i in range(4)]
    for i, prompt in enumerate(prompts[:3]):
        item = make_item(study=study, prompt=prompt, policy=alpha, texts=[f"shared {i}", f"own {i}"],
                         counts=[(1, 1), (1, 0)], predicted_win_rate=0.8)
        for name, person in people.items():
            make_judgment(item=item, participant=person, pick=PICKS[name][i])
    for prompt in (prompts[0], prompts[3]):  # two decided items against the adversary
        make_item(study=study, prompt=prompt, policy=alpha, texts=[f"copy {prompt.pk}"], counts=[(2, 1)],
                  replicate=1, needs_judgment=False, predicted_win_rate=2 / 3)
    for prompt in prompts[1:]:  # alpha against beta: every item decided
        make_item(study=study, prompt=prompt, policy=alpha, texts=[f"both {prompt.pk}"], counts=[(2, 1)],
                  opponent_label="beta", opponent_policy=beta, needs_judgment=False, predicted_win_rate=2 / 3)
    return study


def cell(results, opponent):
    (row,) = [row for row in results.cells if row.opponent == opponent]
    return row


def test_decided_items_count_at_their_credit_with_the_weight_of_an_annotated_item(study_with_decided):
    results = compute_results(study_with_decided)
    adversary = cell(results, "adversary")
    # 3 items to judge, 9 judgments: each of the 2 decided items weighs 9 / 3 = 3 judgments.
    assert adversary.interval.estimate == pytest.approx((sum(JUDGED) + 3 * 2 * 2 / 3) / (9 + 6))
    assert adversary.interval.decided_share == pytest.approx(2 / 5)
    assert (adversary.judged_items, adversary.items_to_judge, adversary.decided_items) == (3, 3, 2)
    assert (adversary.interval.n, adversary.interval.n_prompts, adversary.interval.n_annotators) == (9, 4, 3)
    assert adversary.predicted == pytest.approx((9 * 0.8 + 6 * 2 / 3) / 15)
    assert results.n_decided == 5
    assert results.n_analysed == 9


def test_the_decided_share_stays_their_share_of_the_items_while_judgments_are_missing(study_with_decided):
    Judgment.objects.filter(assignment__participant__in=Participant.objects.filter(study=study_with_decided)[2:3],
                            assignment__item__prompt__external_id="p2").delete()
    adversary = cell(compute_results(study_with_decided), "adversary")
    assert adversary.interval.n == 8
    assert adversary.interval.decided_share == pytest.approx(2 / 5)  # D / (I + D), not 6 / (8 + 6)
    judged = sum(JUDGED) - JUDGED[8]
    assert adversary.interval.estimate == pytest.approx((judged + 8 / 3 * 2 * 2 / 3) / (8 + 8 / 3 * 2))


def test_a_cell_of_decided_items_alone_is_reported_at_k_over_k_plus_m(study_with_decided):
    results = compute_results(study_with_decided)
    beta = cell(results, "beta")
    assert beta.interval.estimate == pytest.approx(2 / 3)
    assert (beta.judged_items, beta.items_to_judge, beta.decided_items) == (0, 0, 3)
    assert (beta.interval.n, beta.interval.n_annotators, beta.interval.df) == (0, 0, 2)
    (robust,) = results.robust
    assert robust.result.opponents == ("adversary", "beta")
    assert robust.result.estimate == pytest.approx(min(2 / 3, cell(results, "adversary").interval.estimate))
    assert robust.missing_opponents == ()


def test_robust_rows_name_opponents_whose_items_have_no_judgment_yet(study_with_decided):
    alpha = study_with_decided.policies.get(name="alpha")
    make_item(study=study_with_decided, prompt=study_with_decided.prompts.first(), policy=alpha,
              texts=["g1", "g2"], counts=[(2, 0), (0, 1)], opponent_label="gamma")
    (robust,) = compute_results(study_with_decided).robust
    assert robust.missing_opponents == ("gamma",)


def test_before_any_judgment_the_results_show_nothing(study_with_decided):
    Judgment.objects.all().delete()
    results = compute_results(study_with_decided)
    assert results.cells == []
    assert results.robust == []
    assert results.n_decided == 0


def test_results_page_shows_decided_counts_and_says_how_they_count(researcher_client, study_with_decided):
    html = researcher_client.get(reverse("studies:results", args=[study_with_decided.slug])).content.decode()
    assert 'id="decided-note"' in html
    assert "whatever anyone picks" in html
    assert "plus 5 items decided by construction" in html
    assert "<td>3 of 3</td><td>2</td>" in html
    assert "<td>0 of 0</td><td>3</td>" in html


def test_summary_rows_give_the_decided_items_and_their_share(study_with_decided):
    rows = [dict(zip(SUMMARY_HEADER, row, strict=True)) for row in summary_rows(compute_results(study_with_decided))]
    by_opponent = {row["opponent"]: row for row in rows}
    assert by_opponent["adversary"]["n"] == 9
    assert by_opponent["adversary"]["n_decided_items"] == 2
    assert by_opponent["adversary"]["decided_weight_share"] == pytest.approx(2 / 5)
    assert by_opponent["beta"]["n_decided_items"] == 3


# --- The exports say which items were decided -------------------------------------------------


def read(study, table) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(export.iter_csv(study, table)))))


def test_items_csv_says_which_items_were_decided_and_their_credit(study_with_decided):
    rows = {int(row["item_id"]): row for row in read(study_with_decided, "items")}
    for item in ComparisonItem.objects.filter(study=study_with_decided):
        row = rows[item.pk]
        assert row["needs_judgment"] == ("true" if item.needs_judgment else "false")
        if item.needs_judgment:
            assert row["decided_credit"] == ""
        else:
            assert float(row["decided_credit"]) == pytest.approx(2 / 3)
            assert row["shown"].count(":") == 3  # one text: candidate:slot:c_A:c_B
    assert sum(row["needs_judgment"] == "false" for row in rows.values()) == 5


def test_judgments_csv_holds_only_real_judgments(study_with_decided):
    rows = read(study_with_decided, "judgments")
    assert len(rows) == Judgment.objects.filter(assignment__item__study=study_with_decided).count() == 9
    decided = set(ComparisonItem.objects.filter(needs_judgment=False).values_list("pk", flat=True))
    assert not {int(row["item_id"]) for row in rows} & decided
