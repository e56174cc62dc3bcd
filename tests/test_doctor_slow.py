"""LLMdoctor end to end on the real SmolLM2-135M-Instruct (slow; ``pytest -m slow``).

One persona's judge (``workers.populations.persona_judge_utilities``, the same chat model asked
as that persona) ranks the patient's pools; its pairs train a LoRA doctor with TFPO; then
guided and unguided samples of the same prompts, drawn with the same seeds (common random
numbers), are compared by that judge. The design was fixed before the first run and is not
tuned to its outcome; the figure and its interval are printed (run with ``-s``) and written to
``$UALIGN_DOCTOR_SLOW_REPORT`` when set.

Guidance uses α = 1 − β, so an untrained doctor (LoRA at zero = the patient) would reproduce
plain sampling exactly: any difference comes from training, not from sharpening.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from workers.doctor.guided import guided_sample
from workers.doctor.pairs import pairs_from_population
from workers.doctor.rewards import RewardConfig
from workers.doctor.tfpo import TFPOConfig, train_doctor_from_pairs
from workers.generation import DEMO_CHAT_MODEL, load_model, sample_pool
from workers.populations import persona_judge_utilities

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

PERSONA = "A busy professional who wants short, direct answers with no filler."
PROMPTS = [
    "How do I make a good cup of coffee?",
    "Give me one tip for sleeping better.",
    "What should I pack for a weekend hike?",
    "How can I stay focused while working from home?",
    "What is a healthy breakfast?",
    "How do I keep a houseplant alive?",
]
DECODING = {"max_new_tokens": 40, "temperature": 0.8, "top_p": 0.95, "batch_size": 8}
POOL, EVAL, BETA = 8, 8, 0.7


def judge(patient, prompt, texts):
    return persona_judge_utilities(patient, prompt, texts, [PERSONA]).utilities[0]


def bootstrap_interval(wins_by_prompt, rng, draws=4000):
    """95% percentile interval of the mean win rate, resampling prompts (the clusters)."""
    groups = [np.asarray(w) for w in wins_by_prompt]
    means = []
    for _ in range(draws):
        pick = rng.integers(len(groups), size=len(groups))
        means.append(np.concatenate([groups[i] for i in pick]).mean())
    return tuple(np.quantile(means, [0.025, 0.975]))


def wilson_interval(wins, n, z=1.96):
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_a_doctor_trained_on_a_personas_pairs_wins_that_personas_judge_over_plain_sampling(tmp_path):
    os.environ.setdefault("UALIGN_TORCH_THREADS", "1")
    patient = load_model(DEMO_CHAT_MODEL)
    pairs = []
    for prompt in PROMPTS:
        texts = list(dict.fromkeys(s.text.strip() for s in sample_pool(patient, prompt, n=POOL, seed=11, **DECODING)))
        pairs += pairs_from_population(prompt, texts, judge(patient, prompt, texts)[None, :], mode="all")
    rewards = RewardConfig(
        positive_system=f"You are answering for this person: {PERSONA} Write the answer this person would love.",
        negative_system=f"You are answering for this person: {PERSONA} Write an answer this person would dislike.",
    )
    config = TFPOConfig(steps=60, pairs_per_step=4, learning_rate=1e-3, checkpoint_every=20)
    trained = train_doctor_from_pairs(patient, pairs, root=tmp_path, reward_config=rewards, config=config)
    doctor = load_model(str(trained.path))

    wins_by_prompt = []
    for prompt in PROMPTS:
        plain = sample_pool(patient, prompt, n=EVAL, seed=99, **DECODING)
        guided = guided_sample(patient, prompt, [(doctor, BETA)], alpha=1 - BETA, n=EVAL, seed=99, **DECODING)
        u = judge(patient, prompt, [s.text.strip() for s in plain + guided])
        wins_by_prompt.append([1.0 if g > p else 0.5 if g == p else 0.0 for p, g in zip(u[:EVAL], u[EVAL:], strict=True)])
    wins = np.concatenate(wins_by_prompt)
    rate = float(wins.mean())
    report = {
        "guided_preferred": rate,
        "comparisons": int(wins.size),
        "ties": int((wins == 0.5).sum()),
        "prompt_bootstrap_95": bootstrap_interval(wins_by_prompt, np.random.default_rng(0)),
        "wilson_95": wilson_interval(wins.sum(), wins.size),
        "pairs": len(pairs),
        "first_loss": trained.history[0].loss,
        "last_loss": trained.history[-1].loss,
        "train_seconds": trained.seconds,
    }
    print("\nLLMdoctor slow test:", json.dumps(report, default=float))
    if os.environ.get("UALIGN_DOCTOR_SLOW_REPORT"):
        with open(os.environ["UALIGN_DOCTOR_SLOW_REPORT"], "w") as out:
            json.dump(report, out, default=float, indent=2)
    assert np.mean([h.loss for h in trained.history[-10:]]) < np.mean([h.loss for h in trained.history[:10]])
    assert rate > 0.5, report
