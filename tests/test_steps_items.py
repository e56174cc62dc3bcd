"""The items step (and the steps before it) on a CSV population: items, adversaries, attention
checks, rebuilds that touch nothing needlessly (`studies.steps`, no models)."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

import workers.policies as wp
from studies.models import (
    Assignment,
    Candidate,
    ComparisonItem,
    ItemCandidate,
    PolicyFit,
)
from studies.steps import population
from tests.csv_study import csv_study, prepare, snapshot
from tests.factories import make_participant

pytestmark = pytest.mark.django_db


def test_it_builds_population_fits_and_items_from_a_csv_population():
    study, prompts = csv_study()
    prepare(study, prompts)

    matrix = prompts[0].population
    u = population.utilities_from_bytes(matrix.utilities)
    assert u.shape == (3, 4)
    assert matrix.candidate_ids == [c.pk for c in population.population_candidates(prompts[0])]
    assert sum(matrix.weights) == pytest.approx(1)

    assert PolicyFit.objects.filter(prompt__study=study).count() == 2 * 3 * 2
    for fit in PolicyFit.objects.filter(prompt__study=study):
        assert sum(fit.probabilities) == pytest.approx(1)
        assert 0 <= fit.predicted_robust_win_rate <= 1
    multiplayer = PolicyFit.objects.get(prompt=prompts[0], policy__name="multiplayer", k=2)
    assert multiplayer.certificate_kind == "exploitability"
    assert multiplayer.certificate < 1e-6
    # The equilibrium's guarantee k/(k+1) holds against every single response of the pool it was
    # fitted on: the certificate. A pool of four texts is below MIN_POOL_FOR_HELD_OUT (issue #25),
    # so nothing is held out and the fielded adversary is the pool's.
    assert multiplayer.pool_robust_win_rate == pytest.approx(2 / 3, abs=1e-6)
    assert multiplayer.solver_stats["held_out_candidates"] == []
    assert multiplayer.held_out_robust_win_rate is None
    assert multiplayer.predicted_robust_win_rate == pytest.approx(multiplayer.pool_robust_win_rate)
    sample = PolicyFit.objects.get(prompt=prompts[0], policy__name="sample", k=1)
    assert sample.probabilities == pytest.approx([2 / 6, 2 / 6, 1 / 6, 1 / 6])
    assert sample.certificate_kind == "none"

    # 2 prompts × 3 policies × 2 k × (2 other policies + adversary) × 1 replicate.
    items = ComparisonItem.objects.filter(study=study, is_attention_check=False)
    assert items.count() == 2 * 3 * 2 * 3
    for item in items.prefetch_related("shown"):
        shown = list(item.shown.all())
        assert sum(s.count_policy for s in shown) == item.k
        assert sum(s.count_opponent for s in shown) == item.m
        assert len({s.candidate_id for s in shown}) == len(shown)
        assert sorted(s.slot for s in shown) == list(range(len(shown)))
        assert 0 <= item.predicted_win_rate <= 1


def test_adversary_items_show_the_response_with_the_highest_pick_probability():
    study, prompts = csv_study(n_prompts=1, kinds=("sample",))
    prepare(study, prompts)
    pp = population.load_population(prompts[0])
    fit = PolicyFit.objects.get(prompt=prompts[0], k=2)
    g = wp.pick_probability(pp.pop, np.array(fit.probabilities), 2)
    adversary = pp.candidates[int(np.argmax(g))].pk
    item = ComparisonItem.objects.get(prompt=prompts[0], k=2, opponent_label="adversary")
    assert [s.candidate_id for s in item.shown.all() if s.count_opponent] == [adversary]
    assert item.draw["opponent"] == [adversary]


def test_rebuilding_gives_identical_items_and_adds_nothing():
    study, prompts = csv_study(attention_check_rate=0.2)
    first = prepare(study, prompts)
    before = snapshot(study)
    again = prepare(study, prompts)
    assert first.created == len({row[:6] for row in before}) > 0
    assert again.created == again.replaced == again.removed == 0
    assert snapshot(study) == before
    n_checks = ComparisonItem.objects.filter(study=study, is_attention_check=True).count()
    assert n_checks > 0
    assert Candidate.objects.filter(prompt__study=study, is_attention_check=True).count() == n_checks


def test_attention_checks_hold_one_broken_text_among_good_ones_at_the_study_rate():
    study, prompts = csv_study(attention_check_rate=0.25)
    prepare(study, prompts)
    # The rate is of the items people see: items decided by construction are never shown.
    regular = ComparisonItem.objects.filter(study=study, is_attention_check=False, needs_judgment=True).count()
    checks = ComparisonItem.objects.filter(study=study, is_attention_check=True)
    assert checks.count() == round(0.25 / 0.75 * regular)
    for item in checks.prefetch_related("shown__candidate"):
        assert item.policy is None
        assert item.opponent_label == "attention"
        broken = [s for s in item.shown.all() if s.candidate.is_attention_check]
        good = [s for s in item.shown.all() if not s.candidate.is_attention_check]
        assert len(broken) == 1
        assert broken[0].credit == 0
        assert broken[0].candidate.generator is None
        assert broken[0].candidate.sample_index < 0
        assert good
        assert all(s.credit == 1 for s in good)


def test_items_already_assigned_are_kept_when_a_rebuild_would_draw_differently():
    study, prompts = csv_study(n_prompts=1, kinds=("sample", "nlhf"))
    prepare(study, prompts)
    assigned = ComparisonItem.objects.filter(study=study, policy__name="sample").first()
    Assignment.objects.create(participant=make_participant(study=study), item=assigned)
    shown_before = sorted(assigned.shown.values_list("candidate_id", "count_policy", "count_opponent"))

    study.seed = 99
    study.save()
    counts = prepare(study, prompts)

    assigned.refresh_from_db()
    assert sorted(assigned.shown.values_list("candidate_id", "count_policy", "count_opponent")) == shown_before
    assert counts.created == 0
    assert ComparisonItem.objects.filter(study=study, is_attention_check=False).count() == 1 * 2 * 2 * 2


def test_building_items_leaves_the_planner_statistics_of_the_annotators_tables_current():
    # A bulk load leaves PostgreSQL planning from the statistics of an empty table (reltuples -1)
    # until autovacuum comes by; the annotator's first picks would then be planned as scans. The
    # tables are small here, so ANALYZE reads every row and counts them exactly.
    study, prompts = csv_study()
    prepare(study, prompts)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)",
            [[model._meta.db_table for model in (ComparisonItem, ItemCandidate, Candidate)]],
        )
        reltuples = dict(cursor.fetchall())
    assert reltuples[ComparisonItem._meta.db_table] == ComparisonItem.objects.count() > 0
    assert reltuples[ItemCandidate._meta.db_table] == ItemCandidate.objects.count() > 0
    assert reltuples[Candidate._meta.db_table] == Candidate.objects.count() > 0
