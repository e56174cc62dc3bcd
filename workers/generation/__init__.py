"""LLM sampling for the GPU workers: a cached model loader and reproducible, batched sampling.

Pure Python: no Django import, and torch/transformers are imported inside the functions that
need them (house style C.8), so the web process can import this package cheaply. The Django
tasks pass plain values in and persist the dataclasses that come out.

Modules, along the way a pool is made:

- :mod:`.loading`: :class:`ModelHandle`, the shipped demo models, the conversion cache and
  :func:`load_model` (once per process);
- :mod:`.prompting`: the chat template, :func:`encode_prompt`, :func:`sample_seed`,
  :func:`left_pad`;
- :mod:`.decoding`: score filters, token choice, the batched decode loop, :func:`sample_pool`
  and :func:`next_token_logprobs`;
- :mod:`.record`: :class:`Sample`, :func:`merge_identical`, :func:`reference_distribution` and
  :func:`generation_metadata` (what the web process imports; no torch).

Reproducibility
---------------
Every candidate ``(prompt, index)`` owns a random stream, seeded by :func:`sample_seed` from
``(seed, sha256(prompt), index)``. Sampling draws exactly one uniform number per generated token
from that stream, so the randomness a candidate sees does not depend on which other candidates
share its batch, on ``batch_size``, or on which subset of indices is run (e.g. after a crash).

The model's arithmetic can still depend on the batch shape, so bitwise equality across batch
sizes is not guaranteed. BLAS picks different kernels for different matrix shapes: on the MKL
CPU build here, one row (a matrix-vector product), two or three rows, and four or more rows
each sum in a different order; cuBLAS also chooses kernels by shape. Left padding adds masked
keys, which contribute exact zeros but change how attention kernels block the sum. So one
candidate's log-probabilities agree across batch shapes only to float rounding: measured in
float32 on CPU, |Δ log p| ≈ 1e-7 on the tiny test models and up to 5e-5 on SmolLM2-135M (total
variation ≈ 1e-5 per step). A sampled token can differ only when its uniform draw falls within
that distance of a boundary of the cumulative distribution, i.e. with probability ≲ 1e-5 per
token, and the rest of that text then diverges. Guarantees, in short:

- same ``batch_size`` and indices (in the same order), same hardware and library versions:
  bitwise identical;
- another ``batch_size`` or a subset of indices: identical random draws and logits equal to
  float rounding; texts equal unless a draw lands in that sliver (in ``docs/benchmarks.md``,
  16 of 16 SmolLM2 texts of 64 tokens were equal between batch sizes 1, 8 and 16).

``tests/test_generation_decoding.py`` checks the texts across batch sizes, index subsets and
padding, and the logits within a tolerance.

The prompt is identical for every candidate of a pool, so its prefill is computed once with
batch size 1 and the key/value cache is copied to each row: the first token's distribution is
therefore the same for every batch size.
"""

from __future__ import annotations

from .decoding import next_token_logprobs, sample_pool
from .loading import (
    DEMO_CHAT_MODEL,
    DEMO_EMBEDDER,
    Kind,
    ModelHandle,
    demo_embedder_path,
    demo_model_path,
    load_model,
    model_cache_dir,
)
from .prompting import (
    SEEDING_SCHEME,
    encode_prompt,
    format_chat,
    has_chat_template,
    left_pad,
    sample_seed,
)
from .record import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    FinishReason,
    MergedCandidate,
    Sample,
    generation_metadata,
    merge_identical,
    reference_distribution,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_K",
    "DEFAULT_TOP_P",
    "DEMO_CHAT_MODEL",
    "DEMO_EMBEDDER",
    "SEEDING_SCHEME",
    "FinishReason",
    "Kind",
    "MergedCandidate",
    "ModelHandle",
    "Sample",
    "demo_embedder_path",
    "demo_model_path",
    "encode_prompt",
    "format_chat",
    "generation_metadata",
    "has_chat_template",
    "left_pad",
    "load_model",
    "merge_identical",
    "model_cache_dir",
    "next_token_logprobs",
    "reference_distribution",
    "sample_pool",
    "sample_seed",
]
