"""Decoding: next-token scores, token choice, the batched decode loop, and the public samplers.

Per step and row the scores are ``alpha · log π_patient + Σ_j beta_j · log π_guide_j``
(:func:`_combine`; LLMdoctor decoding, theory §6.3), then temperature, top-k and top-p
(:func:`_filter_scores`), then one uniform draw from the row's own generator
(:func:`_choose_tokens`). :func:`_decode` runs that loop over a batch with a key/value cache;
:func:`sample_pool` and :func:`next_token_logprobs` are the entry points.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .loading import ModelHandle, _torch
from .prompting import encode_prompt, left_pad, sample_seed
from .record import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    FinishReason,
    Sample,
)

# --------------------------------------------------------------------------------------------
# Scores and token choice
# --------------------------------------------------------------------------------------------

_NUCLEUS_CANDIDATES = 256


def _filter_scores(scores: Any, *, top_k: int, top_p: float) -> Any:
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
    scores: Any,
    generators: Sequence[Any],
    *,
    temperature: float,
    top_k: int,
    top_p: float,
) -> Any:
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


def _combine(logits: Sequence[Any], coefs: Sequence[float], n_vocab: int) -> Any:
    """Σ_j coef_j · log_softmax(logits_j) over the shared vocabulary (float32, (b, n_vocab))."""
    torch = _torch()
    total = None
    for lg, coef in zip(logits, coefs, strict=True):
        term = torch.log_softmax(lg[:, :n_vocab].float(), dim=-1)
        term = term if coef == 1.0 else coef * term
        total = term if total is None else total + term
    return total


# --------------------------------------------------------------------------------------------
# The decode loop
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _RowResult:
    token_ids: list[int]
    finish_reason: FinishReason
    seconds: float


@dataclasses.dataclass
class _Batch:
    """The decode loop's state for the rows still active (``active`` holds their row numbers).

    ``caches`` and ``logits`` hold one entry per model: its key/value cache and its logits
    for the next token, (b, V). ``mask`` is the attention mask so far and ``next_position``
    the position id of the token fed next, (b, 1).
    """

    caches: list[Any]
    logits: list[Any]
    mask: Any
    next_position: Any
    active: list[int]


def _forward_kwargs(model: Any) -> dict[str, Any]:
    """Ask for the last position's logits only, when the model supports it."""
    return (
        {"logits_to_keep": 1}
        if "logits_to_keep" in inspect.signature(model.forward).parameters
        else {}
    )


def _prefill(
    models: Sequence[Any], rows: Sequence[Sequence[int]], *, pad_id: int, device: str
) -> _Batch:
    """Run every model over the prompts of ``rows`` and keep their caches.

    Rows of different lengths are left-padded, with an attention mask and position ids counted
    from each row's first real token, so padding does not shift positions. Identical rows (the
    usual case: one prompt, many candidates) are prefilled once and their cache copied.
    """
    torch = _torch()
    batch = len(rows)
    shared = all(list(r) == list(rows[0]) for r in rows[1:])
    ids, mask, positions = left_pad(
        [rows[0]] if shared else rows, pad_id=pad_id, device=device
    )
    caches, logits = [], []
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
    return _Batch(caches, logits, mask, positions[:, -1:] + 1, list(range(batch)))


def _record_tokens(
    state: _Batch,
    chosen: list[int],
    tokens: list[list[int]],
    results: list[_RowResult | None],
    *,
    eos_ids: frozenset[int],
    elapsed: float,
) -> list[int]:
    """Append each active row's chosen token, or finish the row on a stop token.

    Returns the positions (within ``state.active``) of the rows that go on.
    """
    keep = []
    for j, (row, token) in enumerate(zip(state.active, chosen, strict=True)):
        if token in eos_ids:
            results[row] = _RowResult(tokens[row], "stop", elapsed)
        else:
            tokens[row].append(token)
            keep.append(j)
    return keep


def _advance(
    models: Sequence[Any], state: _Batch, chosen: Any, keep: list[int], *, device: str
) -> None:
    """Drop the finished rows from ``state``, then feed the others their chosen token."""
    torch = _torch()
    if len(keep) < len(state.active):
        kept = torch.tensor(keep, dtype=torch.long, device=device)
        for cache in state.caches:
            cache.reorder_cache(kept)
        state.mask = state.mask[kept]
        state.next_position = state.next_position[kept]
        chosen = chosen[kept]
        state.active = [state.active[j] for j in keep]
    state.mask = torch.cat(
        [
            state.mask,
            torch.ones((len(state.active), 1), dtype=state.mask.dtype, device=device),
        ],
        dim=-1,
    )
    feed = chosen.view(-1, 1).to(device)
    state.logits = []
    for model, cache in zip(models, state.caches, strict=True):
        out = model(
            input_ids=feed,
            attention_mask=state.mask,
            position_ids=state.next_position,
            past_key_values=cache,
            use_cache=True,
        )
        state.logits.append(out.logits[:, -1, :])
    state.next_position = state.next_position + 1


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

    All ``models`` read the same token ids (:func:`_prefill`, then :func:`_advance` one token
    at a time); their log-probabilities are combined with ``coefs`` (LLMdoctor decoding,
    theory §6.3). Finished rows leave the batch.
    """
    torch = _torch()
    start = time.perf_counter()
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    tokens: list[list[int]] = [[] for _ in rows]
    results: list[_RowResult | None] = [None] * len(rows)
    with torch.inference_mode():
        state = _prefill(models, rows, pad_id=pad_id, device=device)
        for step in range(max_new_tokens):
            chosen = _choose_tokens(
                _combine(state.logits, coefs, n_vocab),
                [generators[r] for r in state.active],
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
            )
            elapsed = time.perf_counter() - start
            keep = _record_tokens(
                state,
                chosen.tolist(),
                tokens,
                results,
                eos_ids=eos_ids,
                elapsed=elapsed,
            )
            if not keep or step == max_new_tokens - 1:
                state.active = [state.active[j] for j in keep]
                break
            _advance(models, state, chosen, keep, device=device)
    elapsed = time.perf_counter() - start
    for row in state.active:
        results[row] = _RowResult(tokens[row], "length", elapsed)
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------------------------
# What a model says about itself
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Scoring without sampling
# --------------------------------------------------------------------------------------------


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
    Results agree with one-row-at-a-time scoring up to float rounding (see the package
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
    columns = _check_scoring(handle, rows, token_ids, batch_size)
    n_vocab = _n_vocab(handle)
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


def _check_scoring(
    handle: ModelHandle,
    rows: Sequence[Sequence[int]],
    token_ids: Sequence[int] | None,
    batch_size: int,
) -> list[int] | None:
    """Validate :func:`next_token_logprobs`'s arguments; return the columns asked for."""
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
    return columns


# --------------------------------------------------------------------------------------------
# Sampling a pool
# --------------------------------------------------------------------------------------------


def _check_sampling(
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
    """Validate :func:`sample_pool`'s arguments; return the indices to sample."""
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
    chosen = _check_indices(indices, n)
    _check_guides(handle, guides)
    return chosen


def _check_indices(indices: Sequence[int] | None, n: int) -> list[int]:
    if indices is None:
        return list(range(n))
    chosen = list(indices)
    for i in chosen:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"indices: expected integers in [0, {n}), got {i!r}")
    if len(set(chosen)) != len(chosen):
        raise ValueError("indices: contains duplicates")
    if not chosen:
        raise ValueError("indices: is empty")
    return chosen


def _check_guides(
    handle: ModelHandle, guides: Sequence[tuple[ModelHandle, float]]
) -> None:
    """Each guide is a ``(ModelHandle, beta)`` pair on the patient's device and vocabulary."""
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


def _check_context(
    members: Sequence[ModelHandle], n_prompt: int, max_new_tokens: int
) -> None:
    """The prompt plus ``max_new_tokens`` must fit in the context of every model."""
    for member in members:
        limit = _context_limit(member)
        if limit is not None and n_prompt + max_new_tokens > limit:
            raise ValueError(
                f"max_new_tokens: prompt ({n_prompt} tokens) + {max_new_tokens} new tokens "
                f"exceed the context of {member.ref!r} ({limit})"
            )


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
    (see :func:`sample_seed` and the package docstring for what is reproducible).

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
    chosen = _check_sampling(
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
    _check_context(members, len(prompt_ids), max_new_tokens)
    n_vocab = min(_n_vocab(m) for m in members)
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
        samples += [_sample(handle, i, row) for i, row in zip(chunk, rows, strict=True)]
    return samples


def _sample(handle: ModelHandle, index: int, row: _RowResult) -> Sample:
    return Sample(
        index=index,
        text=handle.tokenizer.decode(row.token_ids, skip_special_tokens=True),
        token_count=len(row.token_ids),
        seconds=row.seconds,
        finish_reason=row.finish_reason,
        token_ids=tuple(row.token_ids),
    )
