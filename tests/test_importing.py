from __future__ import annotations

import json

import pytest

from studies.importing import import_prompts
from studies.models import Prompt
from tests.factories import make_prompt, make_study

pytestmark = pytest.mark.django_db


def test_it_imports_csv_with_ids_and_extra_columns_as_metadata():
    study = make_study()
    data = b'text,external_id,topic\n"Write a poem, please",p1,poetry\nExplain tides,p2,science\n'
    report = import_prompts(study=study, filename="prompts.csv", data=data)
    assert report.ok
    assert report.created == 2
    poem = Prompt.objects.get(study=study, external_id="p1")
    assert poem.text == "Write a poem, please"
    assert poem.metadata == {"topic": "poetry"}


def test_it_imports_jsonl_and_keeps_metadata():
    study = make_study()
    lines = [
        {"text": "What is 2+2?", "external_id": 7, "metadata": {"difficulty": 1}},
        {"text": "Name a colour", "source": "manual"},
    ]
    data = ("\n".join(json.dumps(line) for line in lines) + "\n\n").encode()
    report = import_prompts(study=study, filename="p.jsonl", data=data)
    assert report.ok
    assert report.created == 2
    assert Prompt.objects.get(external_id="7").metadata == {"difficulty": 1}
    assert Prompt.objects.get(text="Name a colour").metadata == {"source": "manual"}


def test_a_bad_csv_row_saves_nothing_and_names_its_line():
    study = make_study()
    data = b"text,external_id\nfine prompt,a\n,b\nanother,a\n"
    report = import_prompts(study=study, filename="prompts.csv", data=data)
    assert not report.ok
    assert [(e.line, e.message) for e in report.errors] == [
        (3, "text is missing or empty"),
        (4, "external_id 'a' repeats line 2"),
    ]
    assert Prompt.objects.filter(study=study).count() == 0


def test_a_bad_jsonl_line_saves_nothing():
    study = make_study()
    data = b'{"text": "ok"}\n{"text": "unterminated\n[1, 2]\n{"text": "x", "metadata": [1]}\n'
    report = import_prompts(study=study, filename="prompts.jsonl", data=data)
    assert [e.line for e in report.errors] == [2, 3, 4]
    assert "not valid JSON" in report.errors[0].message
    assert "JSON object" in report.errors[1].message
    assert "metadata" in report.errors[2].message
    assert Prompt.objects.filter(study=study).count() == 0


def test_it_rejects_an_external_id_already_in_the_study():
    study = make_study()
    make_prompt(study=study, external_id="dup")
    report = import_prompts(study=study, filename="p.csv", data=b"text,external_id\nnew,dup\n")
    assert "already in this study" in str(report.errors[0])
    assert Prompt.objects.filter(study=study).count() == 1


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("p.csv", b"prompt\nhello\n", "'text' column"),
        ("p.csv", "text\ncaf\u00e9\n".encode("latin-1"), "not UTF-8"),
        ("p.txt", b"text\nhello\n", ".csv or .jsonl"),
        ("p.jsonl", b"\n\n", "no prompts"),
        ("p.csv", b"text\nhello,extra\n", "more fields"),
    ],
)
def test_it_reports_malformed_files(filename, data, message):
    study = make_study()
    report = import_prompts(study=study, filename=filename, data=data)
    assert message in str(report.errors[0])
    assert Prompt.objects.filter(study=study).count() == 0


def test_it_refuses_a_file_over_the_size_limit(settings):
    settings.UALIGN_MAX_UPLOAD_BYTES = 100
    report = import_prompts(study=make_study(), filename="p.csv", data=b"text\n" + b"x" * 200)
    assert "larger than" in str(report.errors[0])


# --- Hostile files: a message per line, nothing saved, never a 500 --------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "t", "metadata": {"score": NaN}}', "NaN is not allowed in JSON"),
        ('{"text": "t", "metadata": {"score": -Infinity}}', "-Infinity is not allowed in JSON"),
        ('{"text": "t", "metadata": {"score": 1e400}}', "the number 1e400 is too large"),
        ('{"text": "t", "metadata": {"n": ' + "9" * 5000 + "}}", "not valid JSON"),
        ('{"text": "nul \\u0000 here"}', "a string contains a NUL character"),
        ('{"text": "half \\ud800 a pair"}', "a string contains an unpaired surrogate"),
        ('{"text": "bell \\u0007"}', "a string contains the control character U+0007"),
        ('{"text": "t", "metadata": {"\\u0000key": 1}}', "a string contains a NUL character"),
        ('{"text": "t", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 20 levels"),
        ('{"text": "t", "metadata": {"a": ' + "[" * 25 + "]" * 25 + "}}", "nested deeper than 20 levels"),
    ],
)
def test_hostile_json_is_refused_with_its_line_and_nothing_is_saved(line, message):
    study = make_study()
    data = ('{"text": "a fine prompt"}\n' + line + "\n").encode()
    report = import_prompts(study=study, filename="prompts.jsonl", data=data)
    assert [e.line for e in report.errors] == [2]
    assert message in report.errors[0].message
    assert not Prompt.objects.filter(study=study).exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"text,topic\nfine,x\nbell \x07 here,y\n", "line 3: a cell contains the control character U+0007"),
        (b"text,topic\nfine,x\nok,esc\x1b[31m\n", "line 3: a cell contains the control character U+001B"),
        (b'text,metadata\nfine,"{""a"": NaN}"\n', "line 2: metadata: NaN is not allowed in JSON"),
        (b"text\n" + b"x" * 200_000 + b"\n", "line 2: malformed CSV (field larger than field limit"),
        (b"x" * 200_000 + b",text\nfine\n", "line 1: malformed CSV (field larger than field limit"),
    ],
)
def test_hostile_csv_is_refused_with_its_line_and_nothing_is_saved(data, message):
    study = make_study()
    report = import_prompts(study=study, filename="prompts.csv", data=data)
    assert any(str(e).startswith(message) for e in report.errors), report.errors
    assert not Prompt.objects.filter(study=study).exists()


def test_a_csv_cell_past_the_field_setting_is_refused(settings):
    settings.UALIGN_IMPORT_MAX_FIELD_CHARS = 50
    study = make_study()
    report = import_prompts(study=study, filename="p.csv", data=b"text\nshort\n" + b"y" * 51 + b"\n")
    assert [str(e) for e in report.errors] == ["line 3: a cell is longer than 50 characters"]


def test_a_file_with_more_rows_than_the_cap_is_refused(settings):
    settings.UALIGN_IMPORT_MAX_ROWS = 5
    study = make_study()
    data = "".join(f'{{"text": "prompt {i}"}}\n' for i in range(6)).encode()
    report = import_prompts(study=study, filename="p.jsonl", data=data)
    assert [str(e) for e in report.errors] == ["line 6: the file has more than 5 prompts (the import limit)"]
    assert not Prompt.objects.exists()
    assert import_prompts(study=study, filename="p.jsonl", data=data.rsplit(b"\n", 2)[0] + b"\n").created == 5


def test_the_problem_list_stops_after_fifty():
    study = make_study()
    report = import_prompts(study=study, filename="p.csv", data=b"text,external_id\n" + b",x\n" * 500)
    assert len(report.errors) == 51
    assert str(report.errors[-1]) == "(stopped after 50 problems)"
