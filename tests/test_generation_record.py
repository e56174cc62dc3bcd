"""workers.generation.record: a run's metadata, merging identical samples, the reference μ.

Tiny random models are saved to disk and loaded through ``load_model``; no database and no
network are needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.tinymodels import tiny_model_dir
from workers.generation import (
    MergedCandidate,
    Sample,
    generation_metadata,
    load_model,
    merge_identical,
    reference_distribution,
)

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_model(
        str(tiny_model_dir(tmp_path_factory.mktemp("llama"), "llama")), device="cpu"
    )


@pytest.fixture(scope="module")
def doctor(tmp_path_factory):
    return load_model(
        str(
            tiny_model_dir(
                tmp_path_factory.mktemp("doctor"), "gpt2", seed=7, initializer_range=0.5
            )
        )
    )


# -- metadata and merging ------------------------------------------------------------------------


def test_metadata_is_json_serialisable_and_names_what_the_run_depends_on(llama, doctor):
    meta = generation_metadata(
        llama,
        seed=9,
        max_new_tokens=12,
        temperature=0.7,
        top_p=0.9,
        top_k=50,
        guides=[(doctor, 0.6)],
    )
    again = json.loads(json.dumps(meta))
    assert again["model"]["ref"] == llama.ref
    assert again["decoding"] == {
        "max_new_tokens": 12,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 50,
        "system_prompt": None,
        "chat_template": True,
    }
    assert again["guides"][0]["beta"] == 0.6
    assert again["seed"] == 9
    assert again["device"] == llama.device
    assert again["dtype"] == "float32"
    assert again["versions"]["torch"] == torch.__version__
    import transformers

    assert again["versions"]["transformers"] == transformers.__version__


def test_metadata_can_be_recorded_from_a_ref_without_loading_the_model():
    meta = generation_metadata("HuggingFaceTB/SmolLM2-135M-Instruct", seed=1)
    assert (
        json.loads(json.dumps(meta))["model"]["ref"]
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert meta["device"] is None


def make_sample(index: int, text: str, token_count: int = 3) -> Sample:
    return Sample(
        index=index,
        text=text,
        token_count=token_count,
        seconds=0.1,
        finish_reason="stop",
    )


def test_merge_identical_counts_multiplicities_of_stripped_texts():
    samples = [
        make_sample(3, "Paris.", 2),
        make_sample(0, "Paris. ", 3),
        make_sample(1, "paris."),
        make_sample(2, "\nParis."),
        make_sample(4, ""),
    ]
    merged = merge_identical(samples)
    assert merged == [
        MergedCandidate(
            text="Paris.", multiplicity=3, indices=(0, 2, 3), token_count=3
        ),
        MergedCandidate(text="paris.", multiplicity=1, indices=(1,), token_count=3),
        MergedCandidate(text="", multiplicity=1, indices=(4,), token_count=3),
    ]
    np.testing.assert_allclose(reference_distribution(merged), [0.6, 0.2, 0.2])


def test_merge_identical_rejects_repeated_indices():
    with pytest.raises(ValueError, match="samples"):
        merge_identical([make_sample(0, "a"), make_sample(0, "b")])
