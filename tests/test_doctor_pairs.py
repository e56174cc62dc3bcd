"""workers.doctor.pairs: preference pairs from populations and judgments, and the pairs CSV."""

from __future__ import annotations

import numpy as np
import pytest

from workers.doctor.pairs import (
    JudgmentRecord,
    PairsCSVError,
    TextPair,
    mid_quantiles,
    pairs_from_judgments,
    pairs_from_population,
    read_pairs_csv,
    split_prompts,
    training_pairs,
    write_pairs_csv,
)

TEXTS = ["alpha", "beta", "gamma"]
U = np.array([[3.0, 1.0, 2.0], [1.0, 1.0, 2.0], [2.0, 2.0, 2.0]])
W = [0.5, 0.25, 0.25]


def as_tuples(pairs):
    return [(p.chosen, p.rejected, round(p.weight, 12), p.source) for p in pairs]


def test_each_type_pairs_its_best_with_its_worst_and_tied_extremes_share_the_types_weight():
    pairs = pairs_from_population("q", TEXTS, U, W, labels=["a", "b", "c"])
    assert as_tuples(pairs) == [
        ("alpha", "beta", 0.5, "type:a"),
        ("gamma", "alpha", 0.125, "type:b"),
        ("gamma", "beta", 0.125, "type:b"),
    ]
    assert all(p.prompt == "q" for p in pairs)


def test_mode_all_pairs_every_strictly_ordered_couple_and_never_a_tie():
    pairs = pairs_from_population("q", TEXTS, U, W, mode="all")
    assert sorted(as_tuples(pairs)) == sorted(
        [
            ("alpha", "beta", round(0.5 / 3, 12), "type:0"),
            ("alpha", "gamma", round(0.5 / 3, 12), "type:0"),
            ("gamma", "beta", round(0.5 / 3, 12), "type:0"),
            ("gamma", "alpha", 0.125, "type:1"),
            ("gamma", "beta", 0.125, "type:1"),
        ]
    )


def test_mid_quantiles_split_ties_in_half():
    q = mid_quantiles(U, np.full(3, 1 / 3))
    np.testing.assert_allclose(q[0], [5 / 6, 1 / 6, 1 / 2])
    np.testing.assert_allclose(q[1], [1 / 3, 1 / 3, 5 / 6])
    np.testing.assert_allclose(q[2], [1 / 2, 1 / 2, 1 / 2])


def test_the_weighted_rule_gives_one_best_and_one_worst_text():
    # Scores 0.625, 0.292, 0.583 (hand computed from the mid-quantiles above).
    pairs = pairs_from_population("q", TEXTS, U, W, rule="weighted")
    assert as_tuples(pairs) == [("alpha", "beta", 1.0, "weighted")]


def test_the_weighted_rule_does_not_move_when_one_type_is_rescaled_monotonically():
    rng = np.random.default_rng(3)
    for _ in range(20):
        u = rng.normal(size=(4, 6)).round(1)
        w = rng.dirichlet(np.ones(4))
        texts = [f"t{i}" for i in range(6)]
        rescaled = u.copy()
        rescaled[1] = np.exp(10 * rescaled[1])
        assert as_tuples(
            pairs_from_population("q", texts, u, w, rule="weighted")
        ) == as_tuples(pairs_from_population("q", texts, rescaled, w, rule="weighted"))


def test_an_indifferent_population_makes_no_pair():
    flat = np.ones((2, 3))
    assert pairs_from_population("q", TEXTS, flat) == []
    assert pairs_from_population("q", TEXTS, flat, rule="weighted") == []
    symmetric = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert pairs_from_population("q", ["x", "y"], symmetric, rule="weighted") == []


def test_equal_texts_never_pair_with_each_other():
    pairs = pairs_from_population(
        "q", ["same", " same ", "other"], np.array([[2.0, 0.0, 1.0]])
    )
    assert pairs == []  # best and worst are one text
    pairs = pairs_from_population(
        "q", ["same", " same ", "other"], np.array([[2.0, 0.0, 1.0]]), mode="all"
    )
    assert as_tuples(pairs) == [
        ("same", "other", 0.5, "type:0"),
        ("other", " same ", 0.5, "type:0"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"utilities": np.ones((2, 2))}, "utilities"),
        ({"utilities": np.array([[1.0, np.nan, 0.0]])}, "utilities"),
        ({"weights": [1.0, -1.0, 1.0]}, "weights"),
        ({"rule": "mean"}, "rule"),
        ({"mode": "some"}, "mode"),
        ({"labels": ["x"]}, "labels"),
        ({"reference": [1.0, 0.0]}, "reference"),
    ],
)
def test_it_rejects_bad_population_arguments(kwargs, name):
    arguments = {"utilities": U, "weights": W} | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        pairs_from_population("q", TEXTS, **arguments)


def test_judgments_pair_the_picked_text_with_each_other_shown_text():
    records = [
        JudgmentRecord("q1", ("a", "b", "c"), "b"),
        JudgmentRecord("q2", ("x", "y"), None),  # can't decide
        JudgmentRecord("q3", ("m", "m ", "n"), "m"),  # a copy of the pick is a tie
    ]
    pairs = pairs_from_judgments(records)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("q1", "b", "a"),
        ("q1", "b", "c"),
        ("q3", "m", "n"),
    ]
    assert {p.source for p in pairs} == {"judgment"}


def test_a_picked_text_that_was_not_shown_is_refused():
    with pytest.raises(ValueError, match=r"records\[1\]"):
        pairs_from_judgments(
            [JudgmentRecord("q", ("a", "b"), "a"), JudgmentRecord("q", ("a", "b"), "z")]
        )


def test_a_pair_refuses_a_tie_and_a_bad_weight():
    with pytest.raises(ValueError, match="^chosen"):
        TextPair("q", "same", " same")
    with pytest.raises(ValueError, match="^weight"):
        TextPair("q", "a", "b", weight=0.0)


# -- CSV ---------------------------------------------------------------------------------------


def test_the_csv_round_trip_is_exact_even_for_formula_like_texts():
    pairs = [
        TextPair("=1+1", "-minus, with a comma", "'quoted", 0.25, "type:x"),
        TextPair("multi\nline", "@at", 'plain "quotes" ünïcode', 1.0, "judgment"),
    ]
    text = write_pairs_csv(pairs)
    assert text.splitlines()[0] == "prompt,chosen,rejected,weight,source"
    assert "\n'=1+1," in "\n" + text  # neutralised for spreadsheets
    assert read_pairs_csv(text) == pairs
    assert read_pairs_csv(text.encode("utf-8")) == pairs


def test_a_hand_written_csv_needs_only_the_three_columns():
    pairs = read_pairs_csv("Chosen,prompt,rejected\ngood,q,bad\n\n")
    assert pairs == [TextPair("q", "good", "bad", 1.0, "csv")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: the file is empty"),
        ("prompt,chosen\nq,a\n", "line 1: header: missing column(s) rejected"),
        ("prompt,chosen,rejected,extra\n", "line 1: header: unknown column(s) extra"),
        (
            "prompt,chosen,rejected,prompt\n",
            "line 1: header: repeated column(s) prompt",
        ),
        ("prompt,chosen,rejected\nq,a\n", "line 2: expected 3 cells, got 2"),
        ("prompt,chosen,rejected\nq, ,b\n", "line 2: chosen: is empty"),
        ("prompt,chosen,rejected\nq,a, a\n", "line 2: chosen: equals rejected"),
        (
            "prompt,chosen,rejected,weight\nq,a,b,-1\n",
            "line 2: weight: expected a finite number > 0",
        ),
        (
            "prompt,chosen,rejected,weight\nq,a,b,lots\n",
            "line 2: weight: expected a number",
        ),
        ("prompt,chosen,rejected\nq,a\x00,b\n", "line 2: chosen: contains a NUL"),
    ],
)
def test_a_bad_csv_is_refused_with_the_line_and_the_reason(text, message):
    with pytest.raises(
        PairsCSVError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        read_pairs_csv(text)


def test_one_bad_row_among_good_ones_returns_nothing_and_names_every_bad_line():
    text = "prompt,chosen,rejected\nq,a,b\nq,,b\nq,c,d\nq,e,e\n"
    with pytest.raises(PairsCSVError) as caught:
        read_pairs_csv(text)
    assert [e.line for e in caught.value.errors] == [3, 5]


def test_row_count_field_size_and_encoding_are_bounded():
    many = "prompt,chosen,rejected\n" + "q,a,b\n" * 4
    with pytest.raises(PairsCSVError, match="more than 3 rows"):
        read_pairs_csv(many, max_rows=3)
    with pytest.raises(PairsCSVError, match="longer than 10 characters"):
        read_pairs_csv("prompt,chosen,rejected\nq,a,bbbbbbbbbbbb\n", max_field_chars=10)
    with pytest.raises(PairsCSVError, match="not UTF-8"):
        read_pairs_csv(b"prompt,chosen,rejected\nq,\xff,b\n")
    with pytest.raises(PairsCSVError) as caught:
        read_pairs_csv("prompt,chosen,rejected\n" + "q,,b\n" * 50, max_errors=5)
    assert len(caught.value.errors) == 5


def test_importing_the_doctor_library_imports_neither_torch_nor_django():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, workers.doctor.pairs, workers.doctor.rewards, workers.doctor.network, "
        "workers.doctor.tfpo, workers.doctor.guided; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'django') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


# -- a prompt split ------------------------------------------------------------------------------


def test_a_prompt_split_is_seeded_disjoint_and_holds_out_the_asked_share():
    prompts = [f"p{i}" for i in range(10)] + ["p3"]  # a repeat counts once
    split = split_prompts(prompts, 0.3, seed=4)
    assert split == split_prompts(prompts, 0.3, seed=4)
    assert len(split.held_out) == 3
    assert len(split.train) == 7
    assert set(split.train) | set(split.held_out) == {f"p{i}" for i in range(10)}
    assert not set(split.train) & set(split.held_out)
    assert split_prompts(["a", "b"], 0.01, seed=0).held_out  # at least one held out …
    assert split_prompts(["a", "b"], 0.99, seed=0).train  # … and never all
    with pytest.raises(ValueError, match="^prompts"):
        split_prompts(["a", "a"], 0.5, seed=0)
    with pytest.raises(ValueError, match="^held_out_fraction"):
        split_prompts(["a", "b"], 1.0, seed=0)


def test_no_held_out_prompt_nor_any_of_its_candidates_reaches_the_training_pairs():
    texts = {"train": ["Sure!", "A long answer.", "Short."], "held": ["Sure! ", "Other.", "Third."]}
    utilities = np.array([[3.0, 2.0, 1.0]])
    pairs = [p for prompt, xs in texts.items() for p in pairs_from_population(prompt, xs, utilities, mode="all")]
    kept = training_pairs(pairs, ["held"], texts["held"])
    assert kept
    assert all(p.prompt == "train" for p in kept)
    # "Sure!" was also sampled for the held-out prompt (up to spaces): its pairs go too.
    assert [(p.chosen, p.rejected) for p in kept] == [("A long answer.", "Short.")]
    assert {p.prompt for p in training_pairs(pairs, ["held"])} == {"train"}
