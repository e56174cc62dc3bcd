"""workers.stats.planning: predicted widths checked by simulation through workers.stats.intervals (no database)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from workers.stats import intervals
from workers.stats.planning import (
    VarianceComponents,
    estimate_components,
    literature_components,
    plan_sample_size,
    predict_widths,
    sup_t_critical_value,
)
from workers.stats.planning_simulation import simulate_study
from workers.stats.study_design import ADVERSARY, CellKey, Design

# Three designs that stress different parts of the prediction: many prompts (the prompt term),
# replicates with attention checks and many cells (item term, annotators spread thin), and few
# annotators (the annotator term and df = G_annotator - 1).
DESIGNS = {
    "prompts": (
        Design(prompts=30, k_values=(1,), policies=("a", "b"), annotations_per_item=3, items_per_participant=10),
        VarianceComponents(prompt=0.3, annotator=0.05),
        0.6,
    ),
    "replicates-and-many-cells": (
        Design(prompts=40, k_values=(1, 2), policies=("a", "b", "c"), annotations_per_item=2,
               items_per_participant=20, replicates=2, attention_check_rate=0.1),
        VarianceComponents(prompt=0.15, item=0.05, annotator=0.05),
        0.55,
    ),
    "few-annotators": (
        Design(prompts=12, k_values=(1,), policies=("a", "b"), annotations_per_item=5, items_per_participant=40),
        VarianceComponents(prompt=0.15, annotator=0.15),
        0.5,
    ),
}


def simulated_half_widths(design, components, means, n_studies, seed):
    """Mean half-widths over simulated studies: cell 0's interval and its policy's f̂(k) band, as
    analysis computes them (before clipping to [0, 1])."""
    first = design.cells[0]
    members = [i for i, c in enumerate(design.cells) if (c.policy, c.k) == (first.policy, first.k)]
    cell, band = [], []
    for s in range(n_studies):
        study = simulate_study(design, components, cell_means=means, rng=[seed, s])
        r = intervals.win_rate_interval(*study.of_cell(0))
        cell.append(stats.t.ppf(0.975, r.df) * r.se)
        mask = np.isin(study.cell, members)
        rr = intervals.robust_win_rate_interval(study.credit[mask], study.prompt[mask], study.annotator[mask],
                                               study.cell[mask], rng=s)
        lows = [c.estimate - rr.critical_value * c.se for c in rr.per_opponent]
        highs = [c.estimate + rr.critical_value * c.se for c in rr.per_opponent]
        band.append((min(highs) - min(lows)) / 2)
    return float(np.mean(cell)), float(np.mean(band))


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_predicted_half_width_is_within_20_percent_of_the_simulated_one(name):
    design, components, mean = DESIGNS[name]
    means = dict.fromkeys(design.cells, mean)
    predicted = predict_widths(design, components, cell_means=means)
    first = design.cells[0]
    band = next(r for r in predicted.robust if (r.policy, r.k) == (first.policy, first.k))
    sim_cell, sim_band = simulated_half_widths(design, components, means, n_studies=60, seed=16)
    assert predicted.cells[0].half_width == pytest.approx(sim_cell, rel=0.2)
    assert band.half_width == pytest.approx(sim_band, rel=0.2)


def test_the_prediction_tracks_the_simulation_as_the_design_grows():
    """Not just one point: quadrupling the prompts roughly halves both widths."""
    design, components, mean = DESIGNS["prompts"]
    big = replace(design, prompts=design.prompts * 4)
    means = dict.fromkeys(design.cells, mean)
    small_pred = predict_widths(design, components, cell_means=means).cells[0].half_width
    big_pred = predict_widths(big, components, cell_means=means).cells[0].half_width
    small_sim, _ = simulated_half_widths(design, components, means, n_studies=30, seed=1)
    big_sim, _ = simulated_half_widths(big, components, means, n_studies=30, seed=2)
    assert big_pred / small_pred == pytest.approx(big_sim / small_sim, rel=0.1)
    assert 0.45 < big_pred / small_pred < 0.55


def test_simulated_study_has_the_designs_participants_and_judgments():
    design, components, mean = DESIGNS["replicates-and-many-cells"]
    study = simulate_study(design, components, cell_means=dict.fromkeys(design.cells, mean), rng=0)
    assert study.participants == design.participants
    assert study.credit.size == design.regular_items * design.annotations_per_item
    assert np.all(np.bincount(study.item) == design.annotations_per_item)


def test_estimated_components_recover_the_simulated_shares():
    design = Design(prompts=200, k_values=(1,), policies=("a", "b"), annotations_per_item=3,
                    items_per_participant=40, replicates=2)
    truth = VarianceComponents(prompt=0.15, item=0.05, annotator=0.05)
    study = simulate_study(design, truth, cell_means=dict.fromkeys(design.cells, 0.55), rng=3)
    est = estimate_components(study.credit, study.prompt, study.annotator, cell_ids=study.cell, item_ids=study.item)
    assert est.prompt == pytest.approx(0.15, abs=0.05)
    assert est.item == pytest.approx(0.05, abs=0.04)
    assert est.annotator == pytest.approx(0.05, abs=0.02)
    assert est.dispersion == pytest.approx(1.0, abs=0.02)  # binary picks
    assert est.n_judgments == study.credit.size
    assert est.pairs["annotator"] > 1000


def test_components_estimated_from_a_pilot_predict_the_next_studys_width():
    """The workflow of the page: pilot → estimate → predict a bigger study → check by simulation."""
    design, truth, mean = DESIGNS["prompts"]
    means = dict.fromkeys(design.cells, mean)
    pilot = simulate_study(replace(design, prompts=120), truth, cell_means=means, rng=5)
    est = estimate_components(pilot.credit, pilot.prompt, pilot.annotator, cell_ids=pilot.cell)
    predicted = predict_widths(design, est, cell_means=means).cells[0].half_width
    simulated, _ = simulated_half_widths(design, truth, means, n_studies=40, seed=6)
    assert predicted == pytest.approx(simulated, rel=0.2)


def test_with_one_item_per_prompt_and_cell_the_items_effect_stays_with_its_prompt():
    design, truth, mean = DESIGNS["prompts"]  # one replicate: item and prompt coincide in a cell
    study = simulate_study(replace(design, prompts=80), truth, cell_means=dict.fromkeys(design.cells, mean), rng=8)
    args = (study.credit, study.prompt, study.annotator)
    with_items = estimate_components(*args, cell_ids=study.cell, item_ids=study.item, fallback=literature_components())
    without = estimate_components(*args, cell_ids=study.cell, fallback=literature_components())
    assert with_items == without
    assert with_items.item == 0
    assert with_items.prompt == pytest.approx(0.3, abs=0.1)


def test_too_few_pairs_take_the_fallback_and_say_so():
    credit = np.array([1, 0, 1, 1, 0, 1.0])
    est = estimate_components(credit, [1, 1, 2, 2, 3, 3], [1, 2, 3, 4, 5, 6], fallback=literature_components())
    assert est.annotator == literature_components().annotator  # nobody judged twice: no annotator pairs
    assert any("annotator" in note for note in est.notes)


def test_literature_defaults_follow_from_the_published_pairwise_agreement():
    defaults = literature_components()
    assert defaults.prompt == pytest.approx(2 * 0.65 - 1)
    assert defaults.residual == pytest.approx(1 - defaults.prompt - defaults.annotator)
    assert "literature" in defaults.source


def test_plan_gives_the_fewest_prompts_that_reach_the_target():
    design = Design(prompts=5, k_values=(1, 2, 4), policies=("sample", "nlhf", "multiplayer"),
                    annotations_per_item=2, items_per_participant=12, attention_check_rate=0.1)
    plan = plan_sample_size(design, literature_components(), half_width=0.05, price=2.5)
    best = plan.recommended.design
    assert plan.recommended.headline() <= 0.05
    fewer = predict_widths(replace(best, prompts=best.prompts - 1), literature_components())
    assert fewer.headline() > 0.05
    assert plan.current.headline() > 0.05  # five prompts are far from enough
    assert plan.recommended_cost == pytest.approx(best.participants * 2.5)
    assert best.annotations_per_item == 2
    assert best.items_per_participant == 12


def test_no_number_of_annotators_beats_the_prompt_floor():
    design = Design(prompts=5, k_values=(4,), policies=("nlhf", "multiplayer"), annotations_per_item=2,
                    items_per_participant=20)
    plan = plan_sample_size(design, literature_components(), half_width=0.05, target="cell",
                            annotation_grid=(1, 2, 5, 20))
    assert plan.prompts_floor is not None
    assert all(alt.prompts >= plan.prompts_floor for alt in plan.alternatives)
    participants = [alt.participants for alt in plan.alternatives]
    assert participants == sorted(participants)  # cheapest first
    assert plan.alternatives[0].annotations_per_item == 1  # fresh prompts buy the most precision


def test_the_cell_target_is_narrower_than_the_simultaneous_band():
    design = Design(prompts=50, k_values=(1,), policies=("a", "b", "c"), annotations_per_item=2,
                    items_per_participant=20)
    widths = predict_widths(design, literature_components())
    assert widths.headline("cell") < widths.headline("robust")


def test_cell_means_near_one_give_narrower_intervals_than_a_coin_flip():
    design = Design(prompts=50, k_values=(4,), policies=("a", "b"), annotations_per_item=2, items_per_participant=20)
    flip = predict_widths(design, literature_components()).cells[0].half_width
    sure = predict_widths(design, literature_components(), cell_means={("a", 4, ADVERSARY): 0.9}).cells[0]
    assert sure.cell == CellKey("a", 4, ADVERSARY)
    assert sure.half_width < flip


def test_one_prompt_gives_no_interval():
    design = Design(prompts=1, k_values=(1,), policies=("a",), annotations_per_item=3, items_per_participant=5)
    widths = predict_widths(design, literature_components())
    assert math.isinf(widths.cells[0].half_width)
    assert math.isinf(widths.robust[0].half_width)


@pytest.mark.parametrize(("opponents", "df"), [(2, 5), (4, 12), (6, 60)])
def test_sup_t_critical_value_matches_monte_carlo_of_independent_opponents(opponents, df, rng):
    z = rng.standard_normal((200_000, opponents))
    t = z / np.sqrt(rng.chisquare(df, (200_000, 1)) / df)
    assert sup_t_critical_value(opponents, df, 0.95) == pytest.approx(np.quantile(np.abs(t).max(axis=1), 0.95), rel=0.01)
    assert sup_t_critical_value(1, df, 0.95) == pytest.approx(stats.t.ppf(0.975, df))


def test_design_counts_judgments_and_participants_like_the_pipeline():
    from studies.models import Study
    from studies.steps.items import attention_check_count

    design = Design(prompts=7, k_values=(1, 2), policies=("a", "b", "c"), annotations_per_item=3,
                    items_per_participant=16, attention_check_rate=0.1)
    assert len(design.cells) == 3 * 2 * 3  # each policy meets the adversary and the two others
    assert design.attention_items == attention_check_count(Study(attention_check_rate=0.1), design.regular_items)
    assert design.judgments == (design.regular_items + design.attention_items) * 3
    assert design.participants == math.ceil(design.judgments / 16)


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: Design(prompts=0, k_values=(1,), policies=("a",), annotations_per_item=1, items_per_participant=1), "prompts"),
        (lambda: Design(prompts=3, k_values=(1, 1), policies=("a",), annotations_per_item=1, items_per_participant=1), "k_values"),
        (lambda: Design(prompts=3, k_values=(1,), policies=(), annotations_per_item=1, items_per_participant=1), "policies"),
        (lambda: Design(prompts=3, k_values=(1,), policies=("a",), annotations_per_item=1, items_per_participant=1,
                        attention_check_rate=1.0), "attention_check_rate"),
        (lambda: VarianceComponents(prompt=0.8, annotator=0.3), "at most 1"),
        (lambda: VarianceComponents(prompt=-0.1), "prompt"),
        (lambda: VarianceComponents(prompt=0.1, dispersion=0), "dispersion"),
        (lambda: plan_sample_size(DESIGNS["prompts"][0], literature_components(), half_width=0), "half_width"),
        (lambda: plan_sample_size(DESIGNS["prompts"][0], literature_components(), half_width=0.05, price=-1), "price"),
        (lambda: plan_sample_size(DESIGNS["prompts"][0], literature_components(), half_width=0.05, target="x"), "target"),
        (lambda: predict_widths(DESIGNS["prompts"][0], literature_components(), confidence=1.5), "confidence"),
        (lambda: predict_widths(DESIGNS["prompts"][0], literature_components(), cell_means={("a", 1, "b"): 2}), "cell mean"),
        (lambda: estimate_components([0.5, 2.0], [1, 2], [1, 2]), "credit"),
        (lambda: estimate_components([0.5, 1.0], [1, 2], [1]), "annotator_ids"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()
