"""workers.doctor.tfpo: the TFPO losses, training, checkpoints, resume and the doctor's hash.

Tiny random models are saved to disk and loaded through ``load_model``; no database needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.tinymodels import tiny_model_dir
from workers.doctor.network import load_doctor
from workers.doctor.pairs import TextPair
from workers.doctor.rewards import RewardConfig, response_logprobs
from workers.doctor.tfpo import (
    TFPOConfig,
    doctor_key,
    prepare_examples,
    subtrajectory_balance_loss,
    train_doctor,
    train_doctor_from_pairs,
    value_hinge_loss,
)
from workers.generation import encode_prompt, load_model

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

PAIRS = [
    TextPair(
        "What is the capital of France?",
        "Paris is the capital of France.",
        "No no no maybe.",
    ),
    TextPair(
        "Explain how rainbows form.", "Yes, that answer is good.", "The lazy dog jumps."
    ),
    TextPair("What is the capital of France?", "Paris.", "The quick brown fox."),
]
REWARDS = RewardConfig(
    positive_system="You are a helpful assistant.", negative_system="Answer badly."
)
FAST = {"learning_rate": 1e-2, "head_learning_rate": 1e-2, "pairs_per_step": 2}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    path = tiny_model_dir(
        tmp_path_factory.mktemp("patient"), "llama", seed=5, initializer_range=0.3
    )
    return load_model(str(path), device="cpu")


# -- losses ------------------------------------------------------------------------------------


def brute_force_subtb(logp, rewards, reference, values, length, scale):
    """Mean over all prefix pairs m < n of (Σ log π − (log F(s_n) − log F(s_m)))², by loops.

    One right-aligned row of width L: response tokens at positions L-T..L-1, s_0 at L-T-1.
    log F(s_t) = scale·C_t + A_t + V(s_t).
    """
    width = len(logp)
    first = width - length
    states = list(range(first - 1, width))  # position of s_0..s_T
    log_flow = []
    for t, pos in enumerate(states):
        tokens = range(first, first + t)
        log_flow.append(
            scale * sum(rewards[j] for j in tokens)
            + sum(reference[j] for j in tokens)
            + values[pos]
        )
    residuals = []
    for m in range(length + 1):
        for n in range(m + 1, length + 1):
            between = sum(logp[j] for j in range(first + m, first + n))
            residuals.append((between - (log_flow[n] - log_flow[m])) ** 2)
    return sum(residuals) / len(residuals)


def test_subtrajectory_balance_matches_a_brute_force_sum_over_all_prefix_pairs():
    rng = np.random.default_rng(0)
    width, lengths, scale = 7, [4, 2], 0.7
    logp, rewards, reference = (rng.normal(size=(2, width)) for _ in range(3))
    values = rng.normal(size=(2, width))
    mask = np.zeros((2, width))
    for row, n in enumerate(lengths):
        mask[row, width - n :] = 1
    got = subtrajectory_balance_loss(
        torch.tensor(logp * mask),
        torch.tensor(rewards * mask),
        torch.tensor(reference * mask),
        torch.tensor(values),
        torch.tensor(mask),
        reward_scale=scale,
    )
    expected = [
        brute_force_subtb(
            logp[r] * mask[r],
            rewards[r] * mask[r],
            reference[r] * mask[r],
            values[r],
            n,
            scale,
        )
        for r, n in enumerate(lengths)
    ]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_the_value_hinge_is_zero_once_the_chosen_value_leads_by_the_margin():
    hinge = value_hinge_loss(
        torch.tensor([1.0, 0.0, 0.05]), torch.tensor([0.5, 0.0, 0.0]), gamma=0.1
    )
    np.testing.assert_allclose(hinge.numpy(), [0.0, 0.1, 0.05], atol=1e-7)


# -- examples and hash ---------------------------------------------------------------------------


def test_examples_carry_signed_rewards_and_the_patients_reference_log_probabilities(
    patient,
):
    config = TFPOConfig(system_prompt="Be brief.")
    examples = prepare_examples(patient, PAIRS, REWARDS, config)
    assert len(examples) == 3
    ex = examples[0]
    assert (ex.chosen_rewards >= 0).all()
    assert (ex.rejected_rewards <= 0).all()
    assert (ex.chosen_rewards > 0).any()
    assert (ex.rejected_rewards < 0).any()
    context = encode_prompt(patient, PAIRS[0].prompt, system_prompt="Be brief.")
    assert list(ex.prompt_ids) == context
    [ref] = response_logprobs(patient, [context], [list(ex.chosen_ids)])
    np.testing.assert_allclose(
        ex.chosen_reference, ref, atol=1e-5
    )  # batch shape changes float rounding
    plain = prepare_examples(patient, PAIRS, REWARDS, TFPOConfig(anchor="reward"))
    assert not plain[0].chosen_reference.any()


def test_a_pair_with_an_empty_response_is_dropped(patient):
    pairs = [*PAIRS, TextPair("q", "Paris.", "")]
    assert len(prepare_examples(patient, pairs, REWARDS, TFPOConfig())) == 3


def test_the_doctor_key_names_pairs_patient_and_hyper_parameters_but_not_checkpoint_cadence(
    patient,
):
    key = doctor_key(PAIRS, patient, REWARDS, TFPOConfig())
    assert key == doctor_key(
        PAIRS, patient, REWARDS, TFPOConfig(checkpoint_every=3, keep_checkpoints=5)
    )
    assert key == doctor_key([TextPair(p.prompt, p.chosen, p.rejected, source="x") for p in PAIRS], patient,
                             REWARDS, TFPOConfig())  # fmt: skip
    others = [
        doctor_key(PAIRS[::-1], patient, REWARDS, TFPOConfig()),
        doctor_key(PAIRS[:2], patient, REWARDS, TFPOConfig()),
        doctor_key(PAIRS, "other-patient", REWARDS, TFPOConfig()),
        doctor_key(
            PAIRS,
            patient,
            RewardConfig(REWARDS.positive_system, REWARDS.negative_system, tau=2.0),
            TFPOConfig(),
        ),
        doctor_key(PAIRS, patient, REWARDS, TFPOConfig(gamma=0.2)),
        doctor_key(PAIRS, patient, REWARDS, TFPOConfig(steps=201)),
    ]
    assert len({key, *others}) == 7


# -- training ------------------------------------------------------------------------------------


def test_both_losses_decrease_on_a_toy_problem(patient, tmp_path):
    config = TFPOConfig(steps=40, checkpoint_every=40, **FAST)
    trained = train_doctor_from_pairs(
        patient, PAIRS, root=tmp_path, reward_config=REWARDS, config=config
    )
    history = trained.history
    assert [h.step for h in history] == list(range(1, 41))
    assert history[0].hinge == pytest.approx(
        config.gamma
    )  # the value head starts at zero
    late = history[-5:]
    assert np.mean([h.subtb for h in late]) < 0.2 * history[0].subtb
    assert np.mean([h.hinge for h in late]) < 0.5 * history[0].hinge
    assert all(np.isfinite(h.loss) for h in history)


def sequence_logp(handle, prompt_ids, response_ids):
    [logp] = response_logprobs(handle, [list(prompt_ids)], [list(response_ids)])
    return float(logp.sum())


def test_the_trained_doctor_prefers_the_chosen_responses_more_than_the_patient_does(
    patient, tmp_path
):
    config = TFPOConfig(steps=40, checkpoint_every=40, **FAST)
    trained = train_doctor_from_pairs(
        patient, PAIRS, root=tmp_path, reward_config=REWARDS, config=config
    )
    doctor = load_doctor(trained.path)
    examples = prepare_examples(patient, PAIRS, REWARDS, config)
    for ex in examples:
        margin = {
            name: sequence_logp(h, ex.prompt_ids, ex.chosen_ids)
            - sequence_logp(h, ex.prompt_ids, ex.rejected_ids)
            for name, h in (("patient", patient), ("doctor", doctor.handle))
        }
        assert margin["doctor"] > margin["patient"] + 1.0, margin


def test_a_trained_doctor_is_saved_as_a_plain_local_model_with_its_head_and_record(
    patient, tmp_path
):
    config = TFPOConfig(steps=3, checkpoint_every=1)
    trained = train_doctor_from_pairs(
        patient, PAIRS, root=tmp_path, reward_config=REWARDS, config=config
    )
    assert trained.path == tmp_path / trained.key[:16] / "doctor"
    assert not (trained.path.parent / "checkpoints").exists()
    handle = load_model(str(trained.path), device="cpu")
    assert handle.tokenizer.get_vocab() == patient.tokenizer.get_vocab()
    assert type(handle.model) is type(patient.model)
    meta = json.loads((trained.path / "doctor.json").read_text())
    assert meta["key"] == trained.key
    assert meta["tfpo"]["steps"] == 3
    assert meta["rewards"]["negative_system"] == "Answer badly."
    assert len(meta["history"]) == 3
    assert (trained.path / "adapter" / "adapter_config.json").is_file()
    assert load_doctor(trained.path).head.weight.shape == (
        1,
        patient.model.config.hidden_size,
    )


def test_a_rerun_with_the_same_inputs_reuses_the_finished_doctor(patient, tmp_path):
    config = TFPOConfig(steps=2)
    first = train_doctor_from_pairs(
        patient, PAIRS, root=tmp_path, reward_config=REWARDS, config=config
    )
    calls = []
    again = train_doctor_from_pairs(
        patient,
        PAIRS,
        root=tmp_path,
        reward_config=REWARDS,
        config=config,
        progress=calls.append,
    )
    assert (first.reused, again.reused) == (False, True)
    assert again.path == first.path
    assert again.key == first.key
    assert calls == []
    assert [h.loss for h in again.history] == [h.loss for h in first.history]
    other = train_doctor_from_pairs(
        patient, PAIRS[:2], root=tmp_path, reward_config=REWARDS, config=config
    )
    assert other.path != first.path
    assert not other.reused


class Crash(Exception):
    pass


def crash_at(step):
    def progress(loss):
        if loss.step == step:
            raise Crash

    return progress


def saved_tensors(folder):
    tensors = safetensors_torch.load_file(str(folder / "model.safetensors"))
    return tensors | {
        f"head.{k}": v
        for k, v in safetensors_torch.load_file(
            str(folder / "value_head.safetensors")
        ).items()
    }


def test_a_run_resumed_after_a_crash_ends_with_the_parameters_of_an_uninterrupted_one(
    patient, tmp_path
):
    config = TFPOConfig(steps=12, checkpoint_every=4, **FAST)
    examples = prepare_examples(patient, PAIRS, REWARDS, config)
    key = doctor_key(PAIRS, patient, REWARDS, config)
    straight = train_doctor(
        patient, examples, config, run_dir=tmp_path / "straight", key=key
    )

    with pytest.raises(Crash):
        train_doctor(
            patient,
            examples,
            config,
            run_dir=tmp_path / "crashed",
            key=key,
            progress=crash_at(7),
        )
    assert sorted(p.name for p in (tmp_path / "crashed" / "checkpoints").iterdir()) == [
        "step-00000004"
    ]
    seen = []
    resumed = train_doctor(
        patient,
        examples,
        config,
        run_dir=tmp_path / "crashed",
        key=key,
        progress=seen.append,
    )
    assert [s.step for s in seen] == list(
        range(5, 13)
    )  # it continued, it did not start over

    assert [h.loss for h in resumed.history] == pytest.approx(
        [h.loss for h in straight.history], rel=1e-6
    )
    a, b = saved_tensors(straight.path), saved_tensors(resumed.path)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7, msg=name)
    base = saved_tensors_of_patient(patient)
    assert any(not torch.equal(a[n], base[n]) for n in base if n in a), (
        "training changed nothing"
    )


def saved_tensors_of_patient(patient):
    return {k: v.detach() for k, v in patient.model.state_dict().items()}


def test_checkpoints_of_another_doctor_are_refused(patient, tmp_path):
    config = TFPOConfig(steps=4, checkpoint_every=1, **FAST)
    examples = prepare_examples(patient, PAIRS, REWARDS, config)
    with pytest.raises(Crash):
        train_doctor(
            patient,
            examples,
            config,
            run_dir=tmp_path,
            key="a" * 64,
            progress=crash_at(2),
        )
    with pytest.raises(ValueError, match="checkpoints of another doctor"):
        train_doctor(patient, examples, config, run_dir=tmp_path, key="b" * 64)


def test_a_small_lm_sharing_the_tokenizer_can_be_the_doctor(patient, tmp_path):
    small = tiny_model_dir(tmp_path / "small", "gpt2", seed=2)
    config = TFPOConfig(
        doctor="model", doctor_ref=str(small), steps=15, checkpoint_every=15, **FAST
    )
    trained = train_doctor_from_pairs(
        patient, PAIRS, root=tmp_path / "runs", reward_config=REWARDS, config=config
    )
    assert trained.history[-1].subtb < trained.history[0].subtb
    assert load_model(str(trained.path)).model.config.model_type == "gpt2"


def test_a_doctor_lm_with_another_vocabulary_is_refused(patient, tmp_path):
    stranger = tiny_model_dir(tmp_path / "stranger", "gpt2", vocab_size=300)
    config = TFPOConfig(doctor="model", doctor_ref=str(stranger), steps=2)
    with pytest.raises(ValueError, match="doctor_ref.*vocabulary"):
        train_doctor_from_pairs(
            patient, PAIRS, root=tmp_path / "runs", reward_config=REWARDS, config=config
        )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"doctor": "adapter"}, "doctor"),
        ({"doctor": "model"}, "doctor_ref"),
        ({"anchor": "none"}, "anchor"),
        ({"steps": 0}, "steps"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"gamma": float("nan")}, "gamma"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_it_rejects_bad_training_settings(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        TFPOConfig(**kwargs)
