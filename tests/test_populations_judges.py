"""workers.populations.judges: utilities U (types × responses) from persona judges, embedders
and reward models, on tiny random models (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tinymodels import tiny_bert_dir, tiny_model_dir, tiny_reward_model_dir
from workers.generation import DEMO_EMBEDDER, encode_prompt, load_model
from workers.populations import (
    CandidateColumn,
    SourceUtilities,
    combine_sources,
    embed_texts,
    embedding_utilities,
    judge_answer_tokens,
    persona_judge_utilities,
    reward_model_utilities,
    utilities_from_csv,
)

torch = pytest.importorskip("torch")


PROMPT = "What is 2 + 2?"
RESPONSES = ["4", "It is four.", "Five, I think.", "The answer is 4 because 2 + 2 = 4."]
PERSONAS = [
    "a strict maths teacher",
    "a child who likes short answers",
    "someone who loves long explanations",
]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    return load_model(
        str(tiny_model_dir(tmp_path_factory.mktemp("judge"), "llama", seed=2))
    )


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return load_model(
        str(tiny_bert_dir(tmp_path_factory.mktemp("bert"))), kind="embedding"
    )


@pytest.fixture(scope="module")
def reward_models(tmp_path_factory):
    return [
        load_model(
            str(tiny_reward_model_dir(tmp_path_factory.mktemp("rm-llama"), "llama")),
            kind="sequence-classification",
        ),
        load_model(
            str(
                tiny_reward_model_dir(
                    tmp_path_factory.mktemp("rm-bert"), "bert", seed=1
                )
            ),
            kind="sequence-classification",
        ),
    ]


# -- persona judges ---------------------------------------------------------------------------


def test_persona_judge_gives_one_finite_utility_per_persona_and_response(judge):
    result = persona_judge_utilities(judge, PROMPT, RESPONSES, PERSONAS)
    assert isinstance(result, SourceUtilities)
    assert result.utilities.shape == (3, 4)
    assert result.utilities.dtype == np.float64
    assert np.all(np.isfinite(result.utilities))
    np.testing.assert_allclose(result.weights, [1 / 3] * 3)
    assert result.type_labels == PERSONAS
    assert len({round(u, 12) for u in result.utilities.ravel()}) > 1


def test_persona_judge_batched_equals_one_at_a_time(judge):
    batched = persona_judge_utilities(judge, PROMPT, RESPONSES, PERSONAS, batch_size=5)
    single = persona_judge_utilities(judge, PROMPT, RESPONSES, PERSONAS, batch_size=1)
    np.testing.assert_allclose(batched.utilities, single.utilities, rtol=0, atol=1e-5)


def test_persona_judge_utility_is_the_log_odds_of_yes_against_no(judge):
    yes, no = judge_answer_tokens(judge.tokenizer)
    result = persona_judge_utilities(
        judge, PROMPT, RESPONSES[:2], PERSONAS[:1], system_template="Persona: {persona}"
    )
    ids = encode_prompt(
        judge,
        "Here is a question and an answer.\n\nQuestion: What is 2 + 2?\n\nAnswer: It is four.\n\n"
        "Would you, as this person, consider this answer good? Reply with just Yes or No.",
        system_prompt="Persona: a strict maths teacher",
    )
    with torch.inference_mode():
        logprobs = torch.log_softmax(
            judge.model(torch.tensor([ids])).logits[0, -1].double(), dim=-1
        )
    expected = torch.logsumexp(logprobs[yes], 0) - torch.logsumexp(logprobs[no], 0)
    assert result.utilities[0, 1] == pytest.approx(expected.item(), abs=1e-5)


def test_yes_and_no_first_tokens_are_the_answer_words(judge):
    yes, no = judge_answer_tokens(judge.tokenizer)
    assert {"Yes", "yes", "ĠYes"} <= set(judge.tokenizer.convert_ids_to_tokens(yes))
    assert {"No", "no", "ĠNo", "Ġno"} <= set(judge.tokenizer.convert_ids_to_tokens(no))


def test_a_first_token_shared_by_yes_and_no_is_dropped(tmp_path):
    # With almost no merges, " yes" and " no" both start with the bare space token "Ġ".
    coarse = load_model(
        str(tiny_model_dir(tmp_path / "coarse", "llama", vocab_size=262))
    )
    space = coarse.tokenizer(" yes", add_special_tokens=False)["input_ids"][0]
    assert space == coarse.tokenizer(" no", add_special_tokens=False)["input_ids"][0]
    yes, no = judge_answer_tokens(coarse.tokenizer)
    assert space not in yes + no
    assert set(coarse.tokenizer.convert_ids_to_tokens(yes)) == {"Y", "y"}
    assert set(coarse.tokenizer.convert_ids_to_tokens(no)) == {"N", "n"}


def test_persona_judge_works_without_a_chat_template(tmp_path):
    raw = load_model(str(tiny_model_dir(tmp_path / "raw", "gpt2", chat_template=False)))
    result = persona_judge_utilities(
        raw,
        PROMPT,
        RESPONSES,
        PERSONAS[:2],
        weights=[3, 1],
        labels=["teacher", "child"],
    )
    assert result.utilities.shape == (2, 4)
    assert np.all(np.isfinite(result.utilities))
    np.testing.assert_allclose(result.weights, [0.75, 0.25])
    assert result.type_labels == ["teacher", "child"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"responses": []}, "responses"),
        ({"personas": ["ok", "  "]}, "personas"),
        ({"weights": [1, -1, 1]}, "weights"),
        ({"weights": [1, 1]}, "weights"),
        ({"labels": ["a"]}, "labels"),
        ({"batch_size": 0}, "batch_size"),
        ({"question_template": "{question}"}, "question_template"),
    ],
)
def test_persona_judge_rejects_bad_arguments(judge, kwargs, name):
    arguments = {"responses": RESPONSES, "personas": PERSONAS} | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        persona_judge_utilities(judge, PROMPT, **arguments)


def test_persona_judge_needs_a_causal_lm(embedder):
    with pytest.raises(ValueError, match="^handle"):
        persona_judge_utilities(embedder, PROMPT, RESPONSES, PERSONAS)


# -- embeddings -------------------------------------------------------------------------------------


def test_embedding_utilities_are_cosines_between_personas_and_responses(embedder):
    responses = [
        "a person who loves cats",
        "the quick brown fox",
        "paris is the capital of france",
    ]
    result = embedding_utilities(
        embedder, responses, ["a person who loves cats", "question answer"]
    )
    assert result.utilities.shape == (2, 3)
    assert np.all(np.abs(result.utilities) <= 1)
    assert result.utilities[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert result.utilities[0, 0] > result.utilities[0, 1:].max()


def test_embeddings_are_unit_vectors_unaffected_by_padding(embedder):
    texts = ["cats", "a person who loves cats and dogs and long walks in the park"]
    together = embed_texts(embedder, texts, batch_size=2)
    alone = np.concatenate([embed_texts(embedder, [t]) for t in texts])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_embedding_needs_an_embedding_model(judge):
    with pytest.raises(ValueError, match="^handle"):
        embedding_utilities(judge, RESPONSES, PERSONAS)


# -- reward models ----------------------------------------------------------------------------------


def test_reward_models_give_one_type_each(reward_models):
    result = reward_model_utilities(reward_models, PROMPT, RESPONSES)
    assert result.utilities.shape == (2, 4)
    assert np.all(np.isfinite(result.utilities))
    assert result.type_labels == [h.ref for h in reward_models]
    np.testing.assert_allclose(result.weights, [0.5, 0.5])


def test_reward_models_batched_equal_one_at_a_time(reward_models):
    batched = reward_model_utilities(reward_models, PROMPT, RESPONSES, batch_size=4)
    single = reward_model_utilities(reward_models, PROMPT, RESPONSES, batch_size=1)
    np.testing.assert_allclose(batched.utilities, single.utilities, rtol=0, atol=1e-5)


def test_decoder_reward_model_scores_the_chat_formatted_conversation(reward_models):
    handle = reward_models[0]
    text = handle.tokenizer.apply_chat_template(
        [
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": RESPONSES[1]},
        ],
        tokenize=False,
    )
    ids = handle.tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        expected = handle.model(**ids).logits[0, 0].item()
    result = reward_model_utilities([handle], PROMPT, RESPONSES)
    assert result.utilities[0, 1] == pytest.approx(expected, abs=1e-6)


def test_reward_model_must_have_a_single_logit(tmp_path, reward_models):
    from transformers import AutoModelForSequenceClassification

    path = tiny_reward_model_dir(tmp_path / "two", "bert")
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, ignore_mismatched_sizes=True
    )
    model.save_pretrained(path)
    two = load_model(str(path), kind="sequence-classification")
    with pytest.raises(ValueError, match=r"handles\[1\].*single logit"):
        reward_model_utilities([reward_models[0], two], PROMPT, RESPONSES)


def test_combined_sources_feed_a_population_end_to_end(judge, embedder, reward_models):
    parts = [
        persona_judge_utilities(judge, PROMPT, RESPONSES, PERSONAS),
        embedding_utilities(embedder, RESPONSES, PERSONAS),
        reward_model_utilities(reward_models, PROMPT, RESPONSES),
        utilities_from_csv(
            "type,candidate_id,utility\nme,10,1\nme,11,0\nme,12,0\nme,13,2\n",
            candidates={10 + i: CandidateColumn("q", i) for i in range(4)},
            sizes={"q": 4},
        )["q"],
    ]
    population = combine_sources(
        parts, [0.4, 0.2, 0.2, 0.2], names=["judge", "embed", "rm", "csv"]
    )
    assert population.utilities.shape == (9, 4)
    assert population.weights.shape == (9,)
    assert population.weights.sum() == pytest.approx(1.0)
    assert np.all(population.weights > 0)


# -- real models (slow) ------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_minilm_puts_related_texts_closer():
    handle = load_model(DEMO_EMBEDDER)
    assert handle.kind == "embedding"
    result = embedding_utilities(
        handle,
        [
            "I adore my kitten and spend hours playing with her.",
            "File your quarterly VAT return before the deadline.",
        ],
        ["A person who loves cats", "An accountant who cares about taxes"],
    )
    # Each persona prefers the response about its own interest.
    assert result.utilities[0, 0] > result.utilities[0, 1]
    assert result.utilities[1, 1] > result.utilities[1, 0]
    # And each response is closer to its own persona.
    assert result.utilities[0, 0] > result.utilities[1, 0]
    assert result.utilities[1, 1] > result.utilities[0, 1]


@pytest.mark.slow
def test_real_smollm2_judges_as_personas():
    handle = load_model("smollm2-135m-instruct")
    responses = [
        "Paris.",
        "The capital of France is Paris, a city on the Seine.",
        "I don't know.",
    ]
    result = persona_judge_utilities(
        handle, "What is the capital of France?", responses, PERSONAS[:2], batch_size=6
    )
    single = persona_judge_utilities(
        handle, "What is the capital of France?", responses, PERSONAS[:2], batch_size=1
    )
    assert result.utilities.shape == (2, 3)
    assert np.all(np.isfinite(result.utilities))
    np.testing.assert_allclose(result.utilities, single.utilities, rtol=0, atol=1e-3)
