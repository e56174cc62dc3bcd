"""workers.populations: utilities U (types × responses) from judges, embedders, reward models, CSV."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tinymodels import tiny_bert_dir, tiny_model_dir, tiny_reward_model_dir
from workers.generation import DEMO_EMBEDDER, encode_prompt, load_model
from workers.populations import (
    CandidateColumn,
    CsvRowError,
    SourceUtilities,
    UtilitiesCSVError,
    combine_sources,
    embed_texts,
    embedding_utilities,
    judge_answer_tokens,
    persona_judge_utilities,
    read_utilities_csv,
    reward_model_utilities,
    utilities_by_group,
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


# -- CSV ---------------------------------------------------------------------------------------------

# Two prompts: ids 101, 102 are p1's columns 0, 1; ids 201, 202, 203 are p2's.
WHERE = {
    101: CandidateColumn("p1", 0, {"prompt_id": {"1"}}),
    102: CandidateColumn("p1", 1, {"prompt_id": {"1"}}),
    201: CandidateColumn("p2", 0, {"prompt_id": {"2"}}),
    202: CandidateColumn("p2", 1, {"prompt_id": {"2"}}),
    203: CandidateColumn("p2", 2, {"prompt_id": {"2"}}),
}
SIZES = {"p1": 2, "p2": 3}
NAMES = {"p1": "prompt 'p1'", "p2": "prompt 'p2'"}
P2_ROWS = "a,203,3\na,201,5\na,202,4\n"


def _parse(text, **kwargs):
    return utilities_from_csv(text, candidates=WHERE, sizes=SIZES, group_names=NAMES, **kwargs)


def test_csv_rows_named_by_candidate_id_land_in_their_prompts_columns_in_any_order():
    text = "type,candidate_id,utility,weight\nnovice,102,-0.25,\nexpert,101,0,1\nnovice,101,1.5,2\nexpert,102,3,1\n"
    result = _parse(text + "".join(f"a,{pk},{u},1\n" for pk, u in [(203, 3), (201, 5), (202, 4)]))
    np.testing.assert_array_equal(result["p1"].utilities, [[1.5, -0.25], [0.0, 3.0]])
    np.testing.assert_allclose(result["p1"].weights, [2 / 3, 1 / 3])
    assert result["p1"].type_labels == ["novice", "expert"]
    np.testing.assert_array_equal(result["p2"].utilities, [[5, 4, 3]])
    assert result["p2"].type_labels == ["a"]


def test_csv_without_weights_weighs_types_equally_and_accepts_quotes_and_a_bom():
    text = '\ufeffType,Candidate_ID,Utility\n"likes brevity, mostly",101,1\n"likes brevity, mostly",102,2\nb,101,1e-3\nb,102,2\n'
    result = _parse(text + P2_ROWS)
    assert result["p1"].type_labels == ["likes brevity, mostly", "b"]
    np.testing.assert_allclose(result["p1"].weights, [0.5, 0.5])
    assert result["p1"].utilities[1, 0] == 0.001


def test_csv_checking_columns_must_name_the_candidates_group():
    text = "type,candidate_id,utility,prompt_id\na,101,1,1\na,102,2,2\n" + "".join(
        f"a,{pk},1,2\n" for pk in (201, 202, 203)
    )
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse(text, check_columns=["prompt_id"])
    # The mismatched row is reported once, not again as a missing utility.
    assert caught.value.errors == [CsvRowError(3, "prompt_id '2' does not match candidate 102 (of prompt 'p1')")]
    with pytest.raises(UtilitiesCSVError, match="unknown column"):
        _parse(text)  # a column the caller did not allow is rejected, not ignored
    assert _parse(text.replace("prompt_id", "notes"), ignore_columns=["notes"])["p1"].type_labels == ["a"]


def test_csv_row_errors_name_their_lines():
    text = (
        "type,candidate_id,utility,weight\n"
        "a,101,x,1\n"  # 2: not a number (and 101 is then not reported missing)
        "a,102,2,1\n"
        "a,102,3,1\n"  # 4: repeats line 3
        "b,7,1,1\n"  # 5: unknown id
        "b,101,nan,1\n"  # 6: not finite (b has no good row of p1, so it's no type of p1)
        ",102,1,1\n"  # 7: empty type
        "c,101,1,2\n"  # 8
        "c,102,1,3\n"  # 9: weight differs
        "d,101,1\n"  # 10: wrong cell count
        "e,1o1,1,1\n"  # 11: not an integer
        "f,101,1,-1\n"  # 12: negative weight
        "g,301,1,1\n"  # 13: refused by the caller
        + "".join(f"a,{pk},1,1\n" for pk in (201, 202, 203))
    )
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse(text, refused={301: "belongs to another study"})
    assert caught.value.errors == [
        CsvRowError(2, "utility 'x' is not a finite number"),
        CsvRowError(4, "type 'a' candidate 102 repeats line 3"),
        CsvRowError(5, "no candidate has id 7"),
        CsvRowError(6, "utility 'nan' is not a finite number"),
        CsvRowError(7, "type is empty"),
        CsvRowError(9, "weight 3 of type 'c' differs from 2 on line 8"),
        CsvRowError(10, "expected 4 cells, got 3"),
        CsvRowError(11, "candidate_id '1o1' is not an integer"),
        CsvRowError(12, "weight '-1' is not a finite number >= 0"),
        CsvRowError(13, "candidate 301 belongs to another study"),
    ]
    assert isinstance(caught.value, ValueError)
    assert "line 2: utility 'x'" in str(caught.value)


def test_csv_must_cover_every_candidate_of_every_group():
    text = "type,candidate_id,utility\na,101,1\na,102,2\nb,201,1\nb,203,1\n"
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse(text)
    assert caught.value.errors == [CsvRowError(4, "type 'b' has no utility for candidate(s) 202 of prompt 'p2'")]
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse("type,candidate_id,utility\na,101,1\na,102,2\n")
    assert caught.value.errors == [CsvRowError(1, "no utility rows for prompt 'p2' (candidates 201, 202, 203)")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("type,candidate_id\na,101\n", "missing column(s) utility"),
        ("type,candidate_id,utilty\n", "unknown column(s) 'utilty'"),
        ("type,candidate,utility\na,0,1\n", "the candidate column is now candidate_id"),
        ("type,candidate_id,utility\n", "no utility rows"),
        ("type,candidate_id,utility,weight\na,101,1,1\na,102,1,1\nb,101,1,\nb,102,1,\n" + P2_ROWS.replace("\n", ",1\n"),
         "type 'b' has no weight while other types of prompt 'p1' have one"),
        ("type,candidate_id,utility,weight\na,101,1,0\na,102,1,0\n" + P2_ROWS.replace("\n", ",1\n"),
         "all weights of prompt 'p1' are zero"),
    ],
)
def test_csv_rejects_malformed_files(text, message):
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse(text)
    assert any(message in e.message for e in caught.value.errors), caught.value.errors


def test_csv_stops_after_max_errors():
    text = "type,candidate_id,utility\n" + "".join(f"a,{i},1\n" for i in range(1000, 1050))
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse(text, max_errors=5)
    assert len(caught.value.errors) == 5


def test_csv_reading_and_resolving_are_separate_steps():
    table = read_utilities_csv("type,candidate_id,utility\na,101,1\na,999,2\na,102,x\n")
    assert table.candidate_ids == {101, 999}
    assert [e.line for e in table.errors] == [4]
    with pytest.raises(UtilitiesCSVError) as caught:
        utilities_by_group(table, candidates={pk: WHERE[pk] for pk in (101, 102)}, sizes={"p1": 2},
                           refused={999: "is an attention check"})
    assert [str(e) for e in caught.value.errors] == ["line 3: candidate 999 is an attention check",
                                                     "line 4: utility 'x' is not a finite number"]


def test_csv_resolution_rejects_inconsistent_arguments():
    table = read_utilities_csv("type,candidate_id,utility\na,101,1\n")
    with pytest.raises(ValueError, match="^candidates"):
        utilities_by_group(table, candidates={101: CandidateColumn("p1", 2)}, sizes={"p1": 2})
    with pytest.raises(ValueError, match="^sizes"):
        utilities_by_group(table, candidates={}, sizes={"p1": 0})
    with pytest.raises(ValueError, match="^text"):
        read_utilities_csv(b"type,candidate_id,utility\n")


# -- combining ---------------------------------------------------------------------------------------


def test_combine_sources_stacks_types_and_multiplies_weights():
    a = SourceUtilities(
        np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.25, 0.75]), ["x", "y"]
    )
    b = SourceUtilities(np.array([[5.0, 6.0]]), np.array([1.0]), ["x"])
    result = combine_sources([a, b], [3, 1], names=["judge", "csv"])
    np.testing.assert_array_equal(result.utilities, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_allclose(result.weights, [0.1875, 0.5625, 0.25])
    assert result.weights.sum() == pytest.approx(1.0)
    assert result.type_labels == ["judge: x", "judge: y", "csv: x"]


def test_combine_sources_defaults_to_equal_source_weights():
    a = SourceUtilities(np.zeros((1, 3)), np.array([1.0]), ["a"])
    b = SourceUtilities(np.ones((3, 3)), np.ones(3) / 3, ["b", "c", "d"])
    np.testing.assert_allclose(
        combine_sources([a, b]).weights, [0.5, 1 / 6, 1 / 6, 1 / 6]
    )


def test_combine_sources_rejects_mismatched_parts():
    a = SourceUtilities(np.zeros((1, 3)), np.array([1.0]), ["a"])
    with pytest.raises(ValueError, match=r"parts\[1\]: has 2 responses"):
        combine_sources([a, SourceUtilities(np.zeros((1, 2)), np.array([1.0]), ["b"])])
    with pytest.raises(ValueError, match="pass names="):
        combine_sources([a, a])
    with pytest.raises(ValueError, match="^weights"):
        combine_sources([a, a], [1, -1], names=["p", "q"])
    with pytest.raises(ValueError, match="finite"):
        combine_sources([SourceUtilities(np.array([[np.nan]]), np.array([1.0]), ["n"])])


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
