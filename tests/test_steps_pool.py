"""The pool step: saving a prompt's merged samples."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from studies.models import Candidate
from studies.steps import pool
from tests.csv_study import csv_study
from tests.factories import make_generator

pytestmark = pytest.mark.django_db


def test_nul_characters_in_model_output_are_stored_replaced_and_merged():
    study, prompts = csv_study(n_prompts=1, kinds=("sample",))
    generator = make_generator()
    merged = [
        SimpleNamespace(text="tea\x00time", multiplicity=2, indices=(0, 3), token_count=4),
        SimpleNamespace(text="tea\ufffdtime", multiplicity=1, indices=(1,), token_count=4),
        SimpleNamespace(text="coffee", multiplicity=1, indices=(2,), token_count=2),
    ]
    assert pool.save_prompt_pool(prompts[0], generator, merged, {"model": "x"}) == 2
    first = Candidate.objects.get(prompt=prompts[0], generator=generator, sample_index=0)
    assert first.text == "tea\ufffdtime"
    assert first.multiplicity == 3
    assert first.metadata["sample_indices"] == [0, 1, 3]
    assert "sanitised" in first.metadata
    # A second delivery writes nothing.
    assert pool.save_prompt_pool(prompts[0], generator, merged, {"model": "x"}) == 0
