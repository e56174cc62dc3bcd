"""Issue #24 finding 10, the smaller ones: JSONL lines end at \\n only (U+2028 and U+2029 are text
inside a JSON string), and more below."""

from __future__ import annotations

import json

import pytest

from studies.candidate_import import import_candidates
from studies.importing import import_prompts
from studies.models import Candidate, Prompt
from tests.factories import make_study

# A line separator and a paragraph separator inside JSON strings: valid JSON, and valid JSONL,
# since JSONL ends its lines at \n only (https://jsonlines.org). str.splitlines() splits on both.
SEPARATED = "First line\u2028second line\u2029third"


@pytest.mark.django_db
def test_jsonl_prompts_may_hold_u2028_inside_a_string():
    study = make_study()
    data = "\n".join(json.dumps({"text": t, "external_id": f"p{i}"}, ensure_ascii=False)
                     for i, t in enumerate([SEPARATED, "plain"])).encode()
    report = import_prompts(study=study, filename="p.jsonl", data=data)
    assert report.ok, report.errors
    assert sorted(Prompt.objects.filter(study=study).values_list("text", flat=True)) == sorted([SEPARATED, "plain"])


@pytest.mark.django_db
def test_jsonl_candidates_may_hold_u2028_inside_a_string():
    study = make_study()
    line = {"external_id": "tea", "prompt": "How?", "candidates": [SEPARATED, "Steep it."]}
    data = (json.dumps(line, ensure_ascii=False) + "\r\n").encode()
    report = import_candidates(study=study, filename="c.jsonl", data=data)
    assert report.ok, report.errors
    assert set(Candidate.objects.filter(prompt__study=study).values_list("text", flat=True)) == {SEPARATED, "Steep it."}
