"""workers.stats.study_design: the one rule for a study's attention checks (no database).

The item step (`studies/steps/items.py`) makes `attention_check_count` checks and the planner
(`Design.attention_items`) counts the same number; a study's rate of 1 or more means one check
per regular item, which the planner sees as a share of one half.
"""

from __future__ import annotations

import pytest

from workers.stats.study_design import (
    Design,
    attention_check_count,
    attention_check_share,
)


@pytest.mark.parametrize(("rate", "share"), [(0.0, 0.0), (0.1, 0.1), (0.5, 0.5), (1.0, 0.5), (1.5, 0.5)])
def test_share_is_the_rate_below_one_and_one_half_from_one_up(rate, share):
    assert attention_check_share(rate) == share


@pytest.mark.parametrize(
    ("rate", "n_regular", "count"),
    [(0.0, 50, 0), (0.1, 0, 0), (1.0, 0, 0), (0.1, 1, 1), (0.2, 100, 25), (0.5, 40, 40), (1.0, 7, 7), (2.0, 7, 7)],
)
def test_count_makes_the_checks_that_share_of_what_annotators_see(rate, n_regular, count):
    assert attention_check_count(rate, n_regular) == count


def test_planner_design_counts_the_checks_the_item_step_makes_even_for_a_rate_of_one():
    design = Design(prompts=3, k_values=(1,), policies=("a", "b"), annotations_per_item=2,
                    items_per_participant=4, attention_check_rate=attention_check_share(1.0))
    assert design.attention_items == attention_check_count(1.0, design.regular_items) == design.regular_items


def test_design_rejects_a_share_of_one():
    with pytest.raises(ValueError, match="attention_check_rate"):
        Design(prompts=3, k_values=(1,), policies=("a",), annotations_per_item=1, items_per_participant=1,
               attention_check_rate=1.0)
