"""workers.doctor.guided: α·log π_patient + Σ β_j·log π_doctor_j, on a 3-token vocabulary.

The models are tiny random Llamas whose whole vocabulary is three words, saved to disk and
loaded through ``load_model``, so the distributions can be checked exactly and by sampling.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.tinymodels import tiny_model_dir
from workers.doctor.guided import (
    combine_logprobs,
    guided_next_token_logprobs,
    guided_sample,
    load_guides,
)
from workers.doctor.pairs import TextPair
from workers.doctor.tfpo import TFPOConfig, train_doctor_from_pairs
from workers.generation import (
    encode_prompt,
    load_model,
    next_token_logprobs,
    sample_pool,
)

torch = pytest.importorskip("torch")

PROMPT = "a b c"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


def three_token_model_dir(path, seed):
    """A random Llama over the vocabulary {a, b, c}: no end-of-sequence token, unknown words map to 'a'."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={"a": 0, "b": 1, "c": 2}, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="a")
    config = LlamaConfig(
        vocab_size=3, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, initializer_range=0.5,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = None
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    root = tmp_path_factory.mktemp("trio")
    return [
        load_model(str(three_token_model_dir(root / f"m{seed}", seed)), device="cpu")
        for seed in (1, 2, 3)
    ]


def test_the_formula_on_three_tokens_by_hand():
    patient = np.log([0.5, 0.3, 0.2])
    doctor_1 = np.log([0.2, 0.2, 0.6])
    doctor_2 = np.log([0.1, 0.6, 0.3])
    # α = 0.8, β = (0.5, 0.25): weight_i = p_i^0.8 · q_i^0.5 · r_i^0.25, then normalised.
    weights = [
        0.5**0.8 * 0.2**0.5 * 0.1**0.25,
        0.3**0.8 * 0.2**0.5 * 0.6**0.25,
        0.2**0.8 * 0.6**0.5 * 0.3**0.25,
    ]
    expected = [w / sum(weights) for w in weights]
    got = np.exp(
        combine_logprobs(patient, [doctor_1, doctor_2], alpha=0.8, betas=[0.5, 0.25])
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(
        got, [0.3190, 0.3317, 0.3493], atol=5e-5
    )  # the numbers, written out
    assert math.isclose(got.sum(), 1.0)


def test_without_doctors_and_with_alpha_one_it_is_the_patients_distribution():
    patient = np.log([0.5, 0.3, 0.2])
    np.testing.assert_allclose(np.exp(combine_logprobs(patient, [])), [0.5, 0.3, 0.2])


def test_the_models_next_token_distributions_combine_with_the_formula(trio):
    patient, d1, d2 = trio
    rows = [encode_prompt(patient, PROMPT), encode_prompt(patient, "b b")]
    got = guided_next_token_logprobs(patient, [(d1, 0.5), (d2, 0.25)], rows, alpha=0.8)
    parts = [next_token_logprobs(m, rows) for m in trio]
    np.testing.assert_allclose(
        got, combine_logprobs(parts[0], parts[1:], alpha=0.8, betas=[0.5, 0.25])
    )
    assert got.shape == (2, 3)


def test_guided_sampling_draws_from_the_combined_distribution(trio):
    patient, d1, d2 = trio
    guides = [(d1, 2.0), (d2, 0.25)]
    row = encode_prompt(patient, PROMPT)
    expected = np.exp(guided_next_token_logprobs(patient, guides, [row], alpha=0.5)[0])
    plain = np.exp(next_token_logprobs(patient, [row])[0])
    n = 3000
    pool = guided_sample(
        patient, PROMPT, guides, alpha=0.5, n=n, seed=0, max_new_tokens=1, batch_size=n
    )
    frequencies = np.bincount([s.token_ids[0] for s in pool], minlength=3) / n
    sd = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(frequencies - expected) < 5 * sd), (frequencies, expected)
    assert np.max(np.abs(expected - plain) / sd) > 10, (
        "the doctors must move this distribution measurably"
    )


def test_greedy_guided_decoding_follows_the_combined_argmax_at_every_step(trio):
    patient, d1, d2 = trio
    guides = [(d1, 1.5), (d2, 0.7)]
    [sample] = guided_sample(
        patient, PROMPT, guides, alpha=0.3, n=1, seed=0, max_new_tokens=6, temperature=0
    )
    row = encode_prompt(patient, PROMPT)
    for token in sample.token_ids:
        assert token == int(
            np.argmax(guided_next_token_logprobs(patient, guides, [row], alpha=0.3)[0])
        )
        row = [*row, token]
    plain = sample_pool(patient, PROMPT, n=1, seed=0, max_new_tokens=6, temperature=0)[
        0
    ]
    assert plain.token_ids != sample.token_ids  # these weights change the greedy path


def test_zero_betas_and_alpha_one_reproduce_plain_sampling(trio):
    patient, d1, d2 = trio
    plain = sample_pool(patient, PROMPT, n=8, seed=3, max_new_tokens=5)
    guided = guided_sample(
        patient,
        PROMPT,
        [(d1, 0.0), (d2, 0.0)],
        alpha=1.0,
        n=8,
        seed=3,
        max_new_tokens=5,
    )
    assert [s.token_ids for s in guided] == [s.token_ids for s in plain]


def test_it_rejects_non_finite_weights(trio):
    patient, d1, _ = trio
    with pytest.raises(ValueError, match="^alpha"):
        guided_sample(patient, PROMPT, [(d1, 0.5)], alpha=float("inf"), n=1, seed=0)
    with pytest.raises(ValueError, match=r"^betas\[0\]"):
        combine_logprobs(np.zeros(3), [np.zeros(3)], betas=[float("nan")])
    with pytest.raises(ValueError, match="^betas"):
        combine_logprobs(np.zeros(3), [np.zeros(3)], betas=[])


def test_trained_doctors_load_as_guides_and_a_folder_without_one_is_refused(tmp_path):
    patient = load_model(
        str(tiny_model_dir(tmp_path / "patient", "llama", seed=5)), device="cpu"
    )
    pairs = [
        TextPair("What is the capital of France?", "Paris.", "The lazy dog.")
    ]
    doctors = [
        train_doctor_from_pairs(
            patient,
            pairs,
            root=tmp_path / "runs",
            config=TFPOConfig(steps=2, seed=seed),
        ).path
        for seed in (0, 1)
    ]
    guides = load_guides([(doctors[0], 0.6), (doctors[1], 0.4)])
    assert [b for _, b in guides] == [0.6, 0.4]
    pool = guided_sample(
        patient, "What is the capital of France?", guides, n=3, seed=0, max_new_tokens=4
    )
    assert len(pool) == 3
    with pytest.raises(ValueError, match=r"^specs\[0\].*no trained doctor"):
        load_guides([(tmp_path / "patient", 0.5)])
