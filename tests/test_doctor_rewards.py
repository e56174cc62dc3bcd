"""workers.doctor.rewards: token rewards from the frozen patient (theory.md §6.1).

Tiny random models are saved to disk and loaded through ``load_model``; no database needed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.tinymodels import tiny_model_dir
from workers.doctor.rewards import (
    RewardConfig,
    TokenRewards,
    reward_cache_key,
    reward_terms,
    score_responses,
    tokenize_response,
)
from workers.generation import encode_prompt, load_model

torch = pytest.importorskip("torch")

PROMPT = "What is the capital of France?"
CONFIG = RewardConfig(
    positive_system="You are a helpful assistant.",
    negative_system="Answer badly.",
    tau=0.5,
    theta=0.2,
)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    path = tiny_model_dir(
        tmp_path_factory.mktemp("patient"), "llama", seed=5, initializer_range=0.3
    )
    return load_model(str(path), device="cpu")


def test_the_reward_formula_matches_a_hand_computation():
    pos = [-1.0, -2.0, -0.5]
    neg = [-1.5, -2.0, -2.5]
    # Δ = (0.5, 0, 2.0); mean Δ = 5/6; Δ/mean = (0.6, 0, 2.4); /τ=2 → (0.3, 0, 1.2).
    terms = reward_terms(pos, neg, tau=2.0, theta=0.3)
    np.testing.assert_allclose(terms.delta, [0.5, 0.0, 2.0])
    np.testing.assert_allclose(terms.strength, [math.tanh(0.3), 0.0, math.tanh(1.2)])
    # S_1 = tanh(0.3) = 0.2913 ≤ θ = 0.3 is zeroed; so is S_2 = 0.
    np.testing.assert_allclose(terms.magnitude, [0.0, 0.0, math.tanh(1.2)])
    rewards = TokenRewards((1, 2, 3), np.array(pos), np.array(neg), *terms)
    np.testing.assert_allclose(rewards.signed(1), [0.0, 0.0, 0.8336546070121552])
    np.testing.assert_allclose(rewards.signed(-1), [0.0, 0.0, -0.8336546070121552])


def test_identical_log_probabilities_and_empty_responses_give_zero_rewards():
    assert reward_terms(
        [-1.0, -2.0], [-1.0, -2.0], tau=1.0, theta=0.1
    ).magnitude.tolist() == [0.0, 0.0]
    assert reward_terms([], [], tau=1.0, theta=0.1).magnitude.size == 0


def single_row_logprobs(handle, context, response):
    """log π(y_t | context, y_<t) with one unpadded forward pass (an independent path)."""
    ids = torch.tensor([context + response])
    with torch.no_grad():
        logp = torch.log_softmax(
            handle.model(input_ids=ids).logits[0, :-1].double(), dim=-1
        )
    return (
        logp[len(context) - 1 :]
        .gather(-1, torch.tensor(response)[:, None])[:, 0]
        .numpy()
    )


def test_batched_scores_match_one_row_at_a_time_under_both_system_prompts(patient):
    responses = [
        "Paris is the capital of France.",
        "No.",
        "yes no Yes No maybe maybe maybe",
    ]
    scored = score_responses(
        patient, [(PROMPT, r) for r in responses], CONFIG, batch_size=2
    )
    for response, rewards in zip(responses, scored, strict=True):
        ids = tokenize_response(patient, response, CONFIG.max_response_tokens)
        assert list(rewards.token_ids) == ids
        pos = single_row_logprobs(
            patient,
            encode_prompt(patient, PROMPT, system_prompt=CONFIG.positive_system),
            ids,
        )
        neg = single_row_logprobs(
            patient,
            encode_prompt(patient, PROMPT, system_prompt=CONFIG.negative_system),
            ids,
        )
        np.testing.assert_allclose(rewards.logp_pos, pos, atol=1e-5)
        np.testing.assert_allclose(rewards.logp_neg, neg, atol=1e-5)
        expected = reward_terms(pos, neg, tau=CONFIG.tau, theta=CONFIG.theta).magnitude
        np.testing.assert_allclose(rewards.magnitude, expected, atol=1e-4)
    assert any((r.magnitude > 0).any() for r in scored)
    assert all(
        ((r.magnitude == 0) | (r.magnitude > CONFIG.theta)).all() for r in scored
    )


class CountingCache(dict):
    writes = 0

    def __setitem__(self, key, value):
        self.writes += 1
        super().__setitem__(key, value)


def test_rewards_are_computed_once_per_candidate_and_then_read_from_the_cache(patient):
    cache = CountingCache()
    requests = [(PROMPT, "Paris."), (PROMPT, "London."), (PROMPT, "Paris.")]
    first = score_responses(patient, requests, CONFIG, cache=cache)
    assert cache.writes == 2
    assert first[0] is first[2]
    again = score_responses(patient, requests[:2], CONFIG, cache=cache)
    assert cache.writes == 2
    assert again[0] is first[0]
    restored = TokenRewards.from_json(first[1].to_json())
    np.testing.assert_array_equal(restored.magnitude, first[1].magnitude)
    assert restored.token_ids == first[1].token_ids


def test_the_cache_key_changes_with_each_input_it_depends_on(patient):
    base = reward_cache_key(patient, PROMPT, "Paris.", CONFIG)
    assert base == reward_cache_key(patient, PROMPT, "Paris.", CONFIG)
    variants = [
        reward_cache_key(patient, PROMPT, "Paris!", CONFIG),
        reward_cache_key(patient, "Another prompt", "Paris.", CONFIG),
        reward_cache_key("another-patient", PROMPT, "Paris.", CONFIG),
        reward_cache_key(
            patient,
            PROMPT,
            "Paris.",
            RewardConfig(CONFIG.positive_system, "Be rude.", 0.5, 0.2),
        ),
        reward_cache_key(
            patient,
            PROMPT,
            "Paris.",
            RewardConfig(CONFIG.positive_system, CONFIG.negative_system, 1.0, 0.2),
        ),
        reward_cache_key(
            patient,
            PROMPT,
            "Paris.",
            RewardConfig(CONFIG.positive_system, CONFIG.negative_system, 0.5, 0.3),
        ),
    ]
    assert len({base, *variants}) == 7


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"tau": 0.0}, "tau"),
        ({"theta": 1.0}, "theta"),
        ({"negative_system": "same", "positive_system": "same"}, "negative_system"),
        ({"positive_system": " "}, "positive_system"),
        ({"max_response_tokens": 0}, "max_response_tokens"),
    ],
)
def test_it_rejects_bad_reward_settings(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        RewardConfig(**kwargs)


def test_a_response_longer_than_the_context_is_refused(patient):
    config = RewardConfig(max_response_tokens=10_000)
    with pytest.raises(ValueError, match="exceed the context"):
        score_responses(
            patient, [(PROMPT, "Paris is the capital of France. " * 200)], config
        )
