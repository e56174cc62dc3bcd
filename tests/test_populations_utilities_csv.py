"""workers.populations.utilities_csv: the uploaded utilities CSV, read and resolved by candidate id.

Pure Python: no model and no torch needed.
"""

from __future__ import annotations

import numpy as np
import pytest

from workers.populations import (
    CandidateColumn,
    CsvRowError,
    UtilitiesCSVError,
    read_utilities_csv,
    utilities_by_group,
    utilities_from_csv,
)

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
    return utilities_from_csv(
        text, candidates=WHERE, sizes=SIZES, group_names=NAMES, **kwargs
    )


def test_csv_rows_named_by_candidate_id_land_in_their_prompts_columns_in_any_order():
    text = "type,candidate_id,utility,weight\nnovice,102,-0.25,\nexpert,101,0,1\nnovice,101,1.5,2\nexpert,102,3,1\n"
    result = _parse(
        text + "".join(f"a,{pk},{u},1\n" for pk, u in [(203, 3), (201, 5), (202, 4)])
    )
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
    assert caught.value.errors == [
        CsvRowError(3, "prompt_id '2' does not match candidate 102 (of prompt 'p1')")
    ]
    with pytest.raises(UtilitiesCSVError, match="unknown column"):
        _parse(text)  # a column the caller did not allow is rejected, not ignored
    assert _parse(text.replace("prompt_id", "notes"), ignore_columns=["notes"])[
        "p1"
    ].type_labels == ["a"]


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
    assert caught.value.errors == [
        CsvRowError(4, "type 'b' has no utility for candidate(s) 202 of prompt 'p2'")
    ]
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse("type,candidate_id,utility\na,101,1\na,102,2\n")
    assert caught.value.errors == [
        CsvRowError(1, "no utility rows for prompt 'p2' (candidates 201, 202, 203)")
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("type,candidate_id\na,101\n", "missing column(s) utility"),
        ("type,candidate_id,utilty\n", "unknown column(s) 'utilty'"),
        ("type,candidate,utility\na,0,1\n", "the candidate column is now candidate_id"),
        ("type,candidate_id,utility\n", "no utility rows"),
        (
            "type,candidate_id,utility,weight\na,101,1,1\na,102,1,1\nb,101,1,\nb,102,1,\n"
            + P2_ROWS.replace("\n", ",1\n"),
            "type 'b' has no weight while other types of prompt 'p1' have one",
        ),
        (
            "type,candidate_id,utility,weight\na,101,1,0\na,102,1,0\n"
            + P2_ROWS.replace("\n", ",1\n"),
            "all weights of prompt 'p1' are zero",
        ),
    ],
)
def test_csv_rejects_malformed_files(text, message):
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse(text)
    assert any(message in e.message for e in caught.value.errors), caught.value.errors


def test_csv_stops_after_max_errors():
    text = "type,candidate_id,utility\n" + "".join(
        f"a,{i},1\n" for i in range(1000, 1050)
    )
    with pytest.raises(UtilitiesCSVError) as caught:
        _parse(text, max_errors=5)
    assert len(caught.value.errors) == 5


def test_csv_reading_and_resolving_are_separate_steps():
    table = read_utilities_csv("type,candidate_id,utility\na,101,1\na,999,2\na,102,x\n")
    assert table.candidate_ids == {101, 999}
    assert [e.line for e in table.errors] == [4]
    with pytest.raises(UtilitiesCSVError) as caught:
        utilities_by_group(
            table,
            candidates={pk: WHERE[pk] for pk in (101, 102)},
            sizes={"p1": 2},
            refused={999: "is an attention check"},
        )
    assert [str(e) for e in caught.value.errors] == [
        "line 3: candidate 999 is an attention check",
        "line 4: utility 'x' is not a finite number",
    ]


def test_csv_resolution_rejects_inconsistent_arguments():
    table = read_utilities_csv("type,candidate_id,utility\na,101,1\n")
    with pytest.raises(ValueError, match="^candidates"):
        utilities_by_group(
            table, candidates={101: CandidateColumn("p1", 2)}, sizes={"p1": 2}
        )
    with pytest.raises(ValueError, match="^sizes"):
        utilities_by_group(table, candidates={}, sizes={"p1": 0})
    with pytest.raises(ValueError, match="^text"):
        read_utilities_csv(b"type,candidate_id,utility\n")
