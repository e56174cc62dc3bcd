"""workers.doctor.losses and the value hinge inside a TFPO step, against hand computations.

The method's value discrimination is per token: at each response position t both responses
have, after the leading tokens they share, max(0, γ − (V(s_t^w) − V(s_t^l))), averaged over
those positions. Tiny random models; no database.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.tinymodels import tiny_model_dir
from workers.doctor.losses import hinge_positions, token_value_hinge_loss
from workers.doctor.network import build_doctor
from workers.doctor.pairs import TextPair
from workers.doctor.rewards import RewardConfig
from workers.doctor.tfpo import (
    TFPOConfig,
    TrainingExample,
    _batch_loss,
    held_out_margin,
    prepare_examples,
    train_doctor,
)
from workers.generation import load_model

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    path = tiny_model_dir(tmp_path_factory.mktemp("patient"), "llama", seed=7, initializer_range=0.3)
    return load_model(str(path), device="cpu")


def test_the_hinge_counts_the_positions_both_responses_have_after_their_shared_tokens():
    assert hinge_positions([5, 6, 7, 8], [5, 6, 9]) == (2, 3)
    assert hinge_positions([1, 2], [3, 4, 5]) == (0, 2)
    assert hinge_positions([1, 2], [1, 2, 3]) == (2, 2)  # a prefix of the other: none
    assert hinge_positions([4], [4]) == (1, 1)


def test_the_token_hinge_is_the_mean_of_the_per_position_hinges_by_hand():
    gamma = 0.5
    chosen = [[0.9, 0.2, -0.1, 0.0], [1.0, 1.0, 1.0, 1.0], [0.3, 0.0, 0.0, 0.0]]
    rejected = [[0.1, 0.4, -0.3, 5.0], [0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0]]
    counted = [[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    got = token_value_hinge_loss(
        torch.tensor(chosen), torch.tensor(rejected), torch.tensor(counted), gamma=gamma
    )
    # Pair 0: max(0, .5 − .8) = 0, max(0, .5 + .2) = .7, max(0, .5 − .2) = .3 → mean 1.0/3;
    # its 4th position (a 5.0 gap) is not counted. Pair 1: leads by 1 ≥ γ at both → 0.
    # Pair 2: no position counted → 0.
    np.testing.assert_allclose(got.numpy(), [1.0 / 3, 0.0, 0.0], atol=1e-7)


def _example(prompt, chosen, rejected):
    zeros = (np.zeros(len(chosen)), np.zeros(len(rejected)))
    return TrainingExample(tuple(prompt), tuple(chosen), tuple(rejected), *zeros, *zeros)


def _values_alone(net, ids):
    """V_φ at every position of one unpadded row."""
    row = torch.tensor([ids])
    _, values = net.forward(row, torch.ones_like(row), torch.arange(len(ids))[None, :])
    return values[0].detach().numpy()


def test_a_steps_hinge_reads_each_responses_values_token_by_token_through_left_padding(patient):
    config = TFPOConfig(gamma=0.3, value_weight=1.0, seed=3)
    net = build_doctor(patient, config)
    torch.nn.init.normal_(net.head.weight, std=0.05)  # a head that gives different values
    examples = [
        _example([11, 12, 13], [20, 21, 22, 23, 24], [20, 21, 30]),  # shares 2 tokens
        _example([14, 15], [40], [41, 42, 43, 44]),  # different lengths, nothing shared
    ]
    _, _, hinge = _batch_loss(net, examples, config, pad_id=0, device="cpu")
    by_hand = []
    for ex in examples:
        vw = _values_alone(net, [*ex.prompt_ids, *ex.chosen_ids])[len(ex.prompt_ids) :]
        vl = _values_alone(net, [*ex.prompt_ids, *ex.rejected_ids])[len(ex.prompt_ids) :]
        k, stop = hinge_positions(ex.chosen_ids, ex.rejected_ids)
        by_hand.append(np.mean([max(0.0, 0.3 - (vw[t] - vl[t])) for t in range(k, stop)]))
    # Equal weights: the step's hinge is the mean of the pairs' hinges.
    assert hinge.item() == pytest.approx(np.mean(by_hand), abs=1e-5)
    sequence = TFPOConfig(gamma=0.3, value_hinge="sequence", seed=3)
    _, _, seq_hinge = _batch_loss(net, examples, sequence, pad_id=0, device="cpu")
    seq_by_hand = []
    for ex in examples:
        vw = _values_alone(net, [*ex.prompt_ids, *ex.chosen_ids])[len(ex.prompt_ids) :]
        vl = _values_alone(net, [*ex.prompt_ids, *ex.rejected_ids])[len(ex.prompt_ids) :]
        seq_by_hand.append(max(0.0, 0.3 - (vw.mean() - vl.mean())))
    assert seq_hinge.item() == pytest.approx(np.mean(seq_by_hand), abs=1e-5)
    assert abs(hinge.item() - seq_hinge.item()) > 1e-4  # the two forms are different losses


def test_the_value_hinge_option_is_checked():
    with pytest.raises(ValueError, match="^value_hinge"):
        TFPOConfig(value_hinge="mean")  # type: ignore[arg-type]


PAIRS = [
    TextPair("What is the capital of France?", "Paris is the capital of France.", "No no no maybe."),
    TextPair("Explain how rainbows form.", "Light bends in raindrops.", "The lazy dog jumps."),
]
HELD_OUT = [TextPair("Name a big city.", "Paris is a big city.", "No no maybe.")]
REWARDS = RewardConfig(positive_system="You are a helpful assistant.", negative_system="Answer badly.")


def test_training_records_the_held_out_pairs_margin_at_the_monitored_steps(patient, tmp_path):
    config = TFPOConfig(steps=12, checkpoint_every=12, learning_rate=1e-2, head_learning_rate=1e-2,
                        pairs_per_step=2)  # fmt: skip
    examples = prepare_examples(patient, PAIRS, REWARDS, config)
    held_out = prepare_examples(patient, HELD_OUT, REWARDS, config)
    untrained = build_doctor(patient, config)
    assert held_out_margin(untrained, held_out, pad_id=0, device="cpu") == pytest.approx(0.0, abs=1e-3)
    trained = train_doctor(patient, examples, config, run_dir=tmp_path, key="k", held_out=held_out,
                           monitor_every=4)  # fmt: skip
    measured = [h.step for h in trained.history if h.margin is not None]
    assert measured == [1, 4, 8, 12]
    assert all(np.isfinite(h.margin) for h in trained.history if h.margin is not None)


def test_the_training_curve_svg_is_built_from_numbers_only():
    from workers.doctor.curve import history_svg

    history = [
        {"step": 1, "loss": 3.0, "subtb": 2.0, "hinge": 0.1, "margin": 0.0},
        {"step": 2, "loss": 2.0, "subtb": 1.5, "hinge": 0.05, "margin": None},
        {"step": 3, "loss": 1.0, "subtb": float("nan"), "hinge": 0.0, "margin": 0.4, "note": "<script>"},
    ]
    svg = history_svg(history)
    assert svg.startswith("<svg")
    assert svg.count("<polyline") == 3
    assert "<script>" not in svg
    assert "nan" not in svg.lower()
    assert "held-out margin 0.4" in svg
    assert history_svg([]) == ""
