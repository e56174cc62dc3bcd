from __future__ import annotations

import numpy as np
import pytest

from workers.policies.text_choice import ChoiceModel, choose


def test_a_single_type_always_picks_its_favourite(rng):
    model = ChoiceModel(utilities=np.array([[0.1, 0.9, 0.3]]), weights=np.array([1.0]))
    assert {choose(model, rng) for _ in range(50)} == {1}


def test_ties_at_the_top_are_split_uniformly(rng):
    model = ChoiceModel(utilities=np.array([[1.0, 1.0, 0.0]]), weights=np.array([1.0]))
    picks = np.array([choose(model, rng) for _ in range(4000)])
    assert not np.any(picks == 2)
    assert abs(np.mean(picks == 0) - 0.5) < 0.03


def test_types_are_drawn_by_weight(rng):
    model = ChoiceModel(utilities=np.array([[1.0, 0.0], [0.0, 1.0]]), weights=np.array([0.7, 0.3]))
    picks = np.array([choose(model, rng) for _ in range(4000)])
    assert abs(np.mean(picks == 0) - 0.7) < 0.03


def test_luce_noise_picks_by_softmax(rng):
    model = ChoiceModel(utilities=np.array([[np.log(3.0), 0.0]]), weights=np.array([1.0]))
    picks = np.array([choose(model, rng, luce_temperature=1.0) for _ in range(4000)])
    assert abs(np.mean(picks == 0) - 0.75) < 0.03


@pytest.mark.parametrize(
    ("utilities", "weights", "message"),
    [
        (np.zeros(3), np.ones(1), "utilities"),
        (np.array([[np.nan, 1.0]]), np.ones(1), "utilities"),
        (np.zeros((2, 2)), np.array([1.0]), "weights"),
        (np.zeros((2, 2)), np.array([0.9, 0.9]), "weights"),
    ],
)
def test_bad_models_are_rejected_with_the_argument_named(utilities, weights, message):
    with pytest.raises(ValueError, match=message):
        ChoiceModel(utilities=utilities, weights=weights)


def test_a_non_positive_temperature_is_rejected(rng):
    model = ChoiceModel(utilities=np.zeros((1, 2)), weights=np.ones(1))
    with pytest.raises(ValueError, match="luce_temperature"):
        choose(model, rng, luce_temperature=0.0)
