"""What a sampling run produced and what it depended on: samples, merged candidates, metadata.

The web process imports this module to record a run's metadata at launch time, so it imports
no torch: :func:`generation_metadata` accepts a bare model ref in place of a loaded handle.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .loading import ModelHandle, _torch
from .prompting import SEEDING_SCHEME, has_chat_template

DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = 0
DEFAULT_BATCH_SIZE = 8

FinishReason = Literal["stop", "length"]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sampled candidate.

    Attributes
    ----------
    index
        The candidate's index in the pool; with the prompt and seed it fixes the random stream.
    text
        Decoded continuation, special tokens (and the stop token) removed, not stripped.
    token_count
        Number of generated tokens in ``text`` (the stop token is not counted).
    seconds
        Wall-clock time from the start of its batch until this candidate finished (its latency,
        prefill included). Candidates of one batch share the time, so do not sum these.
    finish_reason
        ``"stop"`` when the model emitted an end-of-sequence token, ``"length"`` when
        ``max_new_tokens`` ran out.
    token_ids
        The generated token ids (without the stop token), for exact re-scoring.
    """

    index: int
    text: str
    token_count: int
    seconds: float
    finish_reason: FinishReason
    token_ids: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class MergedCandidate:
    """Samples with the same text after ``str.strip()``, merged into one candidate.

    Attributes
    ----------
    text
        The stripped text.
    multiplicity
        How many samples produced it; ``multiplicity / total`` is the reference distribution μ.
    indices
        The sample indices merged here, ascending.
    token_count
        Token count of the lowest-index sample (samples of equal text can tokenise differently).
    """

    text: str
    multiplicity: int
    indices: tuple[int, ...]
    token_count: int


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "tokenizers", "accelerate", "gguf"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _model_record(model: ModelHandle | str) -> dict[str, Any]:
    if isinstance(model, ModelHandle):
        return {
            "ref": model.ref,
            "revision": model.revision,
            "name_or_path": model.name_or_path,
            "kind": model.kind,
        }
    return {"ref": str(model), "revision": None, "name_or_path": None, "kind": None}


def generation_metadata(
    handle: ModelHandle | str,
    *,
    seed: int,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    system_prompt: str | None = None,
    guides: Sequence[tuple[ModelHandle | str, float]] = (),
    alpha: float = 1.0,
) -> dict[str, Any]:
    """JSON-serialisable record of what a :func:`sample_pool` run depends on.

    Pass the same keyword arguments as to :func:`sample_pool`. ``handle`` may also be a bare
    ref string (e.g. in the web process at launch time, without loading the model); device,
    dtype and chat-template fields are then ``None``.
    """
    loaded = handle if isinstance(handle, ModelHandle) else None
    threads = None
    if loaded is not None and loaded.device.startswith("cpu"):
        threads = _torch().get_num_threads()
    return {
        "model": _model_record(handle),
        "guides": [{**_model_record(g), "beta": float(beta)} for g, beta in guides],
        "alpha": float(alpha),
        "decoding": {
            "max_new_tokens": int(max_new_tokens),
            "temperature": float(temperature),
            "top_p": float(top_p),
            "top_k": int(top_k),
            "system_prompt": system_prompt,
            "chat_template": has_chat_template(loaded.tokenizer)
            if loaded is not None
            else None,
        },
        "seed": int(seed),
        "seeding": SEEDING_SCHEME,
        "batch_size": int(batch_size),
        "device": loaded.device if loaded is not None else None,
        "dtype": loaded.dtype if loaded is not None else None,
        "cpu_threads": threads,
        "versions": _versions(),
    }


def merge_identical(samples: Sequence[Sample]) -> list[MergedCandidate]:
    """Merge samples whose texts are equal after ``str.strip()``.

    Only leading/trailing whitespace is normalised (conservative: case, inner whitespace and
    punctuation still distinguish candidates). Candidates are ordered by their lowest sample
    index, so the result does not depend on the order of ``samples``. An empty text is a
    candidate like any other.

    Returns
    -------
    list[MergedCandidate]
        Multiplicities sum to ``len(samples)``.
    """
    seen: set[int] = set()
    groups: dict[str, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.index):
        if sample.index in seen:
            raise ValueError(f"samples: index {sample.index} appears twice")
        seen.add(sample.index)
        groups.setdefault(sample.text.strip(), []).append(sample)
    return [
        MergedCandidate(
            text=text,
            multiplicity=len(group),
            indices=tuple(s.index for s in group),
            token_count=group[0].token_count,
        )
        for text, group in groups.items()
    ]


def reference_distribution(merged: Sequence[MergedCandidate]) -> np.ndarray:
    """The reference distribution μ over merged candidates: multiplicities / total, shape (N,)."""
    counts = np.array([m.multiplicity for m in merged], dtype=np.float64)
    if counts.size == 0 or counts.sum() <= 0:
        raise ValueError("merged: needs at least one candidate")
    mu: np.ndarray = counts / counts.sum()
    return mu
