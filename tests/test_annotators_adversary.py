"""The annotators' adversary wired into a study (issue #21, docs/theory.md §12): screening items with
their opponents and shares, the headline from `screened_minimum` with the model's adversary beside it on
the page and in the summary CSV, and a clear admin error where the design can't screen."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict

import numpy as np
import pytest
from django.template.defaultfilters import floatformat
from django.urls import reverse

from studies import services
from studies.estimate import export
from studies.estimate.results import SUMMARY_HEADER, compute_results, summary_rows
from studies.estimate.screened import MODEL_ROLE, ROLE, SCREENED_ROW
from studies.models import ComparisonItem, PolicyFit, Study
from studies.steps import population
from tests.csv_study import csv_study, prepare
from tests.factories import admin_study_form, make_participant, make_study
from tests.judgments import make_judgment
from workers.policies.credit import decided_item_weight, tie_credit
from workers.stats.adversary import screened_minimum

pytestmark = pytest.mark.django_db

# The people: every one of them ranks like type "a" of the model's population (tests/csv_study.py),
# except that they like the model's dominated text 3 second best: not the model's population.
TRUTH = [3.0, 1.0, 0.0, 2.0]


def annotators_study(**overrides):
    study, prompts = csv_study(kinds=("multiplayer", "nlhf"), adversary=Study.Adversary.ANNOTATORS,
                               screened_opponents=3, replicates=4, annotations_per_item=3, **overrides)
    prepare(study, prompts)
    return study, prompts


def test_items_screen_several_opponents_with_their_shares_recorded():
    study, prompts = annotators_study()
    items = ComparisonItem.objects.filter(study=study, is_attention_check=False, opponent_policy=None)
    by_cell = defaultdict(list)
    for item in items:
        by_cell[(item.prompt_id, item.policy_id, item.k)].append(item)
    assert len(by_cell) == 2 * 2 * 2
    for (prompt_id, policy_id, k), cell in by_cell.items():
        labels = sorted({item.opponent_label for item in cell})
        assert labels[0] == ComparisonItem.ADVERSARY
        assert len(labels) >= 2
        assert len(labels) <= 3
        assert all(label == ComparisonItem.ADVERSARY or label.startswith("screen ") for label in labels)
        opponents = {}
        for item in cell:
            # replicates 0, 1 screen; 2, 3 confirm
            expected = "screening" if item.replicate < 2 else "confirmation"
            assert item.share == expected
            opponents.setdefault(item.opponent_label, set()).add(tuple(item.draw["opponent"]))
        # one opponent per label, each a different text (m = 1)
        assert all(len(v) == 1 for v in opponents.values())
        assert len({next(iter(v)) for v in opponents.values()}) == len(opponents)
        fit = PolicyFit.objects.get(prompt_id=prompt_id, policy_id=policy_id, k=k)
        assert list(next(iter(opponents[ComparisonItem.ADVERSARY]))) == fit.solver_stats["adversary"]
    # against the other policy nothing is screened
    others = ComparisonItem.objects.filter(study=study, opponent_policy__isnull=False)
    assert others.exists()
    assert set(others.values_list("share", flat=True)) == {""}


def test_a_rebuild_from_the_same_seed_changes_nothing():
    study, prompts = annotators_study()
    from studies.steps import items as item_step

    counts = item_step.build_items(study)
    assert counts.created == counts.replaced == counts.removed == 0


def judge_by_truth(study, n_people=3):
    """Each person judges every item that needs judgment, picking the shown text of largest TRUTH utility."""
    people = [make_participant(study=study) for _ in range(n_people)]
    for item in ComparisonItem.objects.filter(study=study, is_attention_check=False, needs_judgment=True):
        shown = list(item.shown.order_by("slot").select_related("candidate"))
        order = {c.pk: j for j, c in enumerate(population.population_candidates(item.prompt))}
        pick = int(np.argmax([TRUTH[order[s.candidate_id]] for s in shown]))
        for person in people:
            make_judgment(item=item, participant=person, pick=pick)


def _independent_screened(study, policy_name, k):
    """`screened_minimum` on the same judgments and decided items, read straight from the rows."""
    rows = defaultdict(list)  # cell label -> (credit, prompt, annotator, share, decided)
    items = ComparisonItem.objects.filter(study=study, policy__name=policy_name, k=k).exclude(share="")
    for item in items:
        if not item.needs_judgment:
            continue
        for a in item.assignments.select_related("judgment__chosen"):
            c = a.judgment.chosen
            rows[item.opponent_label].append((c.count_policy / (c.count_policy + c.count_opponent), item.prompt_id,
                                              a.participant_id, item.share, False, 1.0, item.pk))
    for label, cell in list(rows.items()):
        to_judge = items.filter(opponent_label=label, needs_judgment=True).count()
        weight = decided_item_weight(len(cell), to_judge, study.annotations_per_item)
        for item in items.filter(opponent_label=label, needs_judgment=False):
            cell.append((tie_credit(k, 1), item.prompt_id, -item.pk, item.share, True, weight, item.pk))
    flat = [(label, *row) for label, cell in rows.items() for row in cell]
    predicted = defaultdict(list)
    for item in items:
        predicted[(item.prompt_id, item.opponent_label)].append(item.predicted_win_rate)
    return screened_minimum(
        [r[1] for r in flat], [r[2] for r in flat], [r[3] for r in flat], [r[0] for r in flat],
        [r[4] == "confirmation" for r in flat], weights=[r[6] for r in flat], decided=[r[5] for r in flat],
        model_win_rates={key: float(np.mean(v)) for key, v in predicted.items()},
    )


def test_the_headline_is_the_screened_minimum_and_the_model_adversary_sits_beside_it(researcher_client):
    study, _ = annotators_study()
    judge_by_truth(study)
    results = compute_results(study)
    assert results.adversary == "annotators"
    n_screening = ComparisonItem.objects.filter(study=study, share="screening", needs_judgment=True).count() * 3
    assert results.n_screening == n_screening
    for row in results.robust:
        expected = _independent_screened(study, row.policy, row.k)
        assert row.screened is not None
        assert row.screened.estimate == pytest.approx(expected.estimate, abs=1e-12)
        assert (row.screened.low, row.screened.high) == pytest.approx((expected.low, expected.high), abs=1e-12)
        assert row.screened.n_screen == expected.n_screen
        assert row.headline is not None  # the model's adversary cell, as in any study
    html = researcher_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert 'id="annotators-adversary-head"' in html
    assert 'id="model-adversary-head"' in html
    assert f"The screening stage used\n    {n_screening} judgments" in html
    shown = re.findall(r'<td class="headline value screened">([^<]*)</td>', html)
    assert shown == [floatformat(r.screened.estimate, 3) for r in results.robust]
    model = re.findall(r'<td class="headline value">([^<]*)</td>', html)
    assert model == [floatformat(r.headline.estimate, 3) for r in results.robust]
    # the finding's pairwise differences are the model's adversary's cells, and it says so
    assert "beats the model's adversary" in results.finding
    svg = researcher_client.get(reverse("studies:results_plot", args=[study.slug])).content.decode()
    assert "annotators" in svg


def test_the_people_s_worst_is_found_where_the_model_is_wrong():
    """TRUTH makes text 0 the people's favourite; where the screen holds it and the model's adversary is another
    text, the headline falls below the model's column.

    Not on every row: the headline is the confirmation share's rate against the opponent the screening share
    found worst, and each item draws its own k samples (seeded by the items' ids), so a cell whose screen
    picked the model's adversary, or a tie, can read a little above the model's column on the other share."""
    study, prompts = annotators_study()
    judge_by_truth(study)
    results = compute_results(study)
    lower = [row for row in results.robust if row.screened.estimate < row.headline.estimate - 1e-9]
    assert lower, [(r.policy, r.k, r.screened.estimate, r.headline.estimate) for r in results.robust]


def test_the_summary_csv_carries_both_and_says_which_is_the_headline():
    study, _ = annotators_study()
    judge_by_truth(study)
    results = compute_results(study)
    rows = [dict(zip(SUMMARY_HEADER, r, strict=True)) for r in summary_rows(results)]
    assert {r["headline_adversary"] for r in rows} == {"annotators"}
    heads = [r for r in rows if r["row"] == SCREENED_ROW]
    models = [r for r in rows if r["row"] == "headline_adversary_cell"]
    assert len(heads) == len(models) == len(results.robust)
    for r in results.robust:
        (head,) = [h for h in heads if (h["policy"], h["k"]) == (r.policy, r.k)]
        (model,) = [h for h in models if (h["policy"], h["k"]) == (r.policy, r.k)]
        assert (head["estimate"], head["ci_low"], head["ci_high"], head["role"]) == (
            r.screened.estimate, r.screened.low, r.screened.high, ROLE)
        assert (model["estimate"], model["role"]) == (r.headline.estimate, MODEL_ROLE)
        assert head["screening_judgments"] == results.n_screening
    text = "".join(export.iter_csv(study, "summary"))
    header = next(csv.reader(io.StringIO(text)))
    assert header[-2:] == ["headline_adversary", "screening_judgments"]


def test_a_model_adversary_study_says_so_in_the_csv():
    study, prompts = csv_study(kinds=("multiplayer",))
    prepare(study, prompts)
    assert set(ComparisonItem.objects.filter(study=study).values_list("share", flat=True)) == {""}
    judge_by_truth(study, n_people=2)
    rows = [dict(zip(SUMMARY_HEADER, r, strict=True)) for r in summary_rows(compute_results(study))]
    assert {(r["headline_adversary"], r["screening_judgments"]) for r in rows} == {("model", 0)}
    assert not [r for r in rows if r["row"] == SCREENED_ROW]


@pytest.mark.parametrize(("changes", "message"), [
    ({"replicates": 1}, "set replicates to at least 2"),
    ({"screened_opponents": 1}, "Screened opponents must be from 2 to 12"),
    ({"pool_size": 1}, "at least 2 candidate texts per prompt"),
])
def test_a_design_that_cannot_screen_is_a_clear_admin_error(rf, researcher, researcher_client, changes, message):
    study = make_study(replicates=4)
    form = admin_study_form(rf, researcher, study, adversary="annotators", **changes)
    assert not form.is_valid()
    assert message in " ".join(form.non_field_errors())
    study.refresh_from_db()
    assert study.adversary == "model"  # nothing saved
    url = reverse("admin:studies_study_change", args=[study.pk])
    page = researcher_client.get(url)
    assert page.status_code == 200


def test_prepare_refuses_a_study_that_cannot_screen():
    study = make_study(adversary=Study.Adversary.ANNOTATORS, replicates=1)
    with pytest.raises(services.PreparationError) as error:
        services.prepare_study(study=study)
    assert "replicates to at least 2" in str(error.value)


def test_a_prompt_with_one_text_is_a_clear_step_error():
    from studies.steps import StepError

    study, prompts = csv_study(kinds=("multiplayer",), adversary=Study.Adversary.ANNOTATORS, replicates=2)
    for prompt in prompts:
        prompt.candidates.exclude(sample_index=0).delete()
    study.preference_sources.all().delete()
    from studies.models import PreferenceSource
    from tests.csv_study import utilities_csv

    PreferenceSource.objects.create(study=study, kind="csv", data=utilities_csv(prompts, {"a": [1], "b": [2]}))
    with pytest.raises(StepError, match="single possible opponent"):
        prepare(study, prompts)


def test_the_planner_sizes_both_stages(researcher_client):
    from studies.estimate import plans

    study, prompts = annotators_study()
    plan = plans.plan_study(study, half_width=0.05, defaults=True)
    assert plan.screened is not None
    now = plan.screened.current
    per_stage = len(prompts) * 2 * len(study.k_values) * study.screened_opponents * 2 * study.annotations_per_item
    assert (now.screening_judgments, now.confirmation_judgments) == (per_stage, per_stage)
    # the design the planner counts holds every screened opponent's items and the other policy's
    assert {c.opponent for c in plan.current.design.cells} == {"adversary", "screen 2", "screen 3", "multiplayer", "nlhf"}
    assert plan.current.design.regular_items == ComparisonItem.objects.filter(
        study=study, is_attention_check=False).count()
    for w in now.widths:
        assert w.half_width_separated < w.half_width_tied == w.half_width
    best = plan.screened.recommended
    assert best is not None
    assert best.headline <= 0.05
    from dataclasses import replace

    from workers.stats import planning_screen

    means = plans.predicted_cell_means(study)[0]
    fewer = planning_screen.predict_screened(replace(best.design, prompts=best.design.prompts - 1, opponents=None),
                                             plan.components, n_opponents=3, cell_means=means)
    assert fewer.headline > 0.05
    # with the study's 4 items per opponent the curse alone is wider than ±0.05: more prompts can't get there
    assert best.design.replicates > study.replicates
    many = planning_screen.predict_screened(replace(plan.current.design, prompts=10**6, opponents=None),
                                            plan.components, n_opponents=3, cell_means=means)
    assert many.headline > 0.05
    judgments = [a.screening_judgments + a.confirmation_judgments for a in plan.screened.alternatives]
    assert judgments == sorted(judgments)
    assert judgments[0] == best.screening_judgments + best.confirmation_judgments
    text = plans.format_plan(plan)
    assert f"{per_stage:,} screening + {per_stage:,} confirmation judgments" in text
    html = researcher_client.get(reverse("admin:studies_study_plan", args=[study.pk]) + "?half_width=0.05").content.decode()
    assert 'id="plan-screened"' in html
    assert 'id="plan-screening-judgments"' in html


def test_the_planner_says_why_a_study_cannot_screen(researcher_client):
    study = make_study(adversary=Study.Adversary.ANNOTATORS, replicates=1)
    from tests.factories import make_policy

    make_policy(study=study, name="alpha")
    page = researcher_client.get(reverse("admin:studies_study_plan", args=[study.pk]) + "?half_width=0.05")
    assert page.status_code == 400
    assert "replicates to at least 2" in page.content.decode()


def test_a_pilot_copy_keeps_the_option_and_each_item_s_share():
    study, _ = annotators_study()
    pilot = services.create_pilot(study=study)
    assert (pilot.adversary, pilot.screened_opponents) == (study.adversary, study.screened_opponents)

    def shares(s):
        return sorted(ComparisonItem.objects.filter(study=s).values_list("opponent_label", "replicate", "share"))

    assert shares(pilot) == shares(study)
