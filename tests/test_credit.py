"""The credit rule and item weighting (`workers.policies.credit`, pure: no database)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.policies import Population, expected_credit
from workers.policies.credit import (
    decided_item_weight,
    judgment_credit,
    pick_credit,
    tie_credit,
)


def test_the_items_expected_credit_splits_a_tie_per_position_not_per_text():
    pop = Population(np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]]))
    # Type 0 ties texts 0 (one policy position) and 1 (one opponent position) → ½; with text 0
    # filling two policy positions it holds 2 of the 3 tied positions → ⅔ (per text it would be ½).
    assert expected_credit(pop, [1, 0, 0], [0, 1, 0]) == pytest.approx(0.25)
    assert expected_credit(pop, [2, 0, 0], [0, 1, 0]) == pytest.approx(1 / 3)
    # A text drawn by both sides is credited c_A / (c_A + c_B).
    assert expected_credit(pop, [0, 2, 0], [0, 1, 0]) == pytest.approx(2 / 3)


def test_a_pick_credits_the_policys_share_of_the_chosen_texts_draws():
    assert pick_credit(2, 1) == pytest.approx(2 / 3)
    assert pick_credit(1, 0) == 1
    assert pick_credit(0, 3) == 0


def test_a_tie_over_all_shown_positions_credits_k_over_k_plus_m():
    assert tie_credit(4, 1) == pytest.approx(0.8)
    assert tie_credit(1, 1) == pytest.approx(0.5)


def test_cant_decide_counts_as_a_tie_only_when_the_study_says_so():
    assert judgment_credit(None, None, k=2, m=1, cant_decide_as_tie=True) == pytest.approx(2 / 3)
    assert judgment_credit(None, None, k=2, m=1, cant_decide_as_tie=False) is None
    assert judgment_credit(1, 1, k=2, m=1, cant_decide_as_tie=False) == pytest.approx(0.5)


def test_a_decided_item_weighs_its_share_of_the_judged_items_or_a_full_annotation():
    assert decided_item_weight(6, 4, 3) == pytest.approx(1.5)  # 6 judgments over 4 items to judge
    assert decided_item_weight(0, 4, 3) == 3.0  # nothing judged yet
    assert decided_item_weight(0, 0, 3) == 3.0  # nothing to judge: every item decided


def test_the_expected_credit_of_a_single_text_is_its_tie_credit():
    pop = Population(np.array([[0.0, 1.0]]))
    assert expected_credit(pop, [0, 2], [0, 1]) == pytest.approx(tie_credit(2, 1))


def test_cant_decide_as_a_tie_is_the_credit_of_a_user_indifferent_between_every_shown_text():
    indifferent = Population(np.zeros((1, 3)))
    assert expected_credit(indifferent, [2, 1, 0], [0, 1, 1]) == pytest.approx(tie_credit(3, 2))
