"""The annotators' adversary's planner (`workers.stats.planning_screen`): the tied loser's curse it plans
for, checked by simulation through `screened_minimum` itself, and its inputs validated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.stats import planning, planning_screen
from workers.stats.adversary import screened_minimum
from workers.stats.study_design import Design


def test_expected_max_of_normals_matches_its_closed_forms():
    assert planning_screen.expected_max_normal(1) == 0.0
    assert planning_screen.expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-7)
    assert planning_screen.expected_max_normal(3) == pytest.approx(1.5 / math.sqrt(math.pi), abs=1e-7)


def test_with_tied_opponents_the_bracket_gap_is_the_tied_curse():
    """J opponents of one win rate per prompt: E[θ̂ − μ̂] = e_J · s (the planner's tied case), within 4 Monte Carlo SE."""
    rng = np.random.default_rng(5)
    n_prompts, n_opp, per_cell, gaps, curses = 20, 4, 16, [], []
    for _ in range(300):
        p = np.repeat(np.arange(n_prompts), n_opp * per_cell)
        o = np.tile(np.repeat(np.arange(n_opp), per_cell), n_prompts)
        y = (rng.random(p.size) < 0.6).astype(float)
        confirm = np.tile(np.arange(per_cell) >= per_cell // 2, n_prompts * n_opp)
        res = screened_minimum(y, p, rng.integers(0, 30, p.size), o, confirm)
        sd, j = planning_screen.tied_bracket_parts(y, p, o)
        gaps.append(res.estimate - res.plug_in)
        curses.append(planning_screen.expected_max_normal(j) * sd)
    gap, se = float(np.mean(gaps)), float(np.std(gaps, ddof=1) / math.sqrt(len(gaps)))
    assert abs(gap - float(np.mean(curses))) < 4 * se + 0.005


def test_screened_design_checks_its_inputs():
    design = Design(prompts=10, k_values=(1,), policies=("a",), annotations_per_item=2, items_per_participant=10,
                    replicates=4)
    full = planning_screen.screened_design(design, 3)
    assert full.opponents_of("a") == ("adversary", "screen 2", "screen 3")
    with pytest.raises(ValueError, match="n_opponents"):
        planning_screen.screened_design(design, 1)
    with pytest.raises(ValueError, match="replicates"):
        planning_screen.screened_design(Design(prompts=10, k_values=(1,), policies=("a",), annotations_per_item=2,
                                               items_per_participant=10, replicates=1), 3)
    comp = planning.literature_components()
    with pytest.raises(ValueError, match="half_width"):
        planning_screen.plan_screened(design, comp, n_opponents=3, half_width=0.7)
    with pytest.raises(ValueError, match="curse_factor"):
        planning_screen.predict_screened(design, comp, n_opponents=3, curse_factor=2)
    stages = planning_screen.predict_screened(design, comp, n_opponents=3)
    assert (stages.screening_judgments, stages.confirmation_judgments) == (10 * 3 * 2 * 2, 10 * 3 * 2 * 2)
