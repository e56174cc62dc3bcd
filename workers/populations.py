"""Preference populations: utilities ``U`` (T types × N responses) for one prompt's pool.

Each source function returns a :class:`SourceUtilities` ``(utilities, weights, type_labels)``:
``utilities`` is float64 of shape (T, N), ``weights`` float64 of shape (T,) summing to 1, and
``type_labels`` names the T types. :func:`combine_sources` stacks several sources into one
population for ``workers.policies.Population(utilities, weights)`` (theory §1).

Only the order of utilities within a type (and exact ties) matters to the maths of theory §1,
so sources on different scales (log-odds, cosines, reward logits) can be stacked without
rescaling.

Pure Python: no Django import; torch is only touched through the model handles of
``workers.generation``, whose functions import it lazily.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from workers.generation import (
    ModelHandle,
    encode_prompt,
    format_chat,
    has_chat_template,
    next_token_logprobs,
)

__all__ = [
    "DEFAULT_JUDGE_QUESTION",
    "DEFAULT_JUDGE_SYSTEM",
    "CsvRowError",
    "SourceUtilities",
    "UtilitiesCSVError",
    "combine_sources",
    "embed_texts",
    "embedding_utilities",
    "judge_answer_tokens",
    "persona_judge_utilities",
    "reward_model_utilities",
    "utilities_from_csv",
]

DEFAULT_JUDGE_SYSTEM = "You are the following person: {persona}\nJudge answers from this person's point of view."
DEFAULT_JUDGE_QUESTION = (
    "Here is a question and an answer.\n\n"
    "Question: {prompt}\n\n"
    "Answer: {response}\n\n"
    "Would you, as this person, consider this answer good? Reply with just Yes or No."
)

_YES_VARIANTS = ("Yes", "yes", " Yes", " yes", "YES")
_NO_VARIANTS = ("No", "no", " No", " no", "NO")


class SourceUtilities(NamedTuple):
    """Utilities of T user types for N responses, from one source.

    Attributes
    ----------
    utilities
        float64, shape (T, N); higher is preferred.
    weights
        float64, shape (T,), non-negative, summing to 1.
    type_labels
        T display names.
    """

    utilities: np.ndarray
    weights: np.ndarray
    type_labels: list[str]


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _texts(
    name: str, values: Sequence[str], *, allow_empty_strings: bool = True
) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ValueError(
            f"{name}: expected a sequence of strings, got {type(values).__name__}"
        )
    items = list(values)
    if not items:
        raise ValueError(f"{name}: is empty")
    for i, value in enumerate(items):
        if not isinstance(value, str):
            raise ValueError(
                f"{name}[{i}]: expected a string, got {type(value).__name__}"
            )
        if not allow_empty_strings and not value.strip():
            raise ValueError(f"{name}[{i}]: is blank")
    return items


def _weights(
    name: str, weights: Sequence[float] | np.ndarray | None, size: int
) -> np.ndarray:
    """Validate and normalise per-type weights; ``None`` means uniform."""
    if weights is None:
        return np.full(size, 1.0 / size)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (size,):
        raise ValueError(f"{name}: expected shape ({size},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name}: must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError(f"{name}: must not all be zero")
    return w / total


def _labels(labels: Sequence[str] | None, default: list[str]) -> list[str]:
    if labels is None:
        return list(default)
    items = _texts("labels", labels, allow_empty_strings=False)
    if len(items) != len(default):
        raise ValueError(f"labels: expected {len(default)} labels, got {len(items)}")
    return items


def _handle(name: str, handle: ModelHandle, kind: str) -> ModelHandle:
    if not isinstance(handle, ModelHandle) or handle.kind != kind:
        raise ValueError(
            f"{name}: expected a {kind!r} ModelHandle from workers.generation.load_model"
        )
    return handle


def _batch_size(batch_size: int) -> int:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    return batch_size


def _check_template(name: str, template: str, fields: Sequence[str]) -> None:
    try:
        template.format(**dict.fromkeys(fields, ""))
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{name}: may only use the fields {', '.join('{' + f + '}' for f in fields)} ({exc!r})"
        ) from None


# --------------------------------------------------------------------------------------------
# Persona judges
# --------------------------------------------------------------------------------------------


def judge_answer_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """First-token ids that start a "yes" and a "no" answer.

    The first token of each spelling in ``("Yes", "yes", " Yes", " yes", "YES")`` and of the
    matching "No" spellings; a token that starts spellings of both (e.g. a bare space token in
    a byte-level BPE) is dropped from both sets.

    Raises
    ------
    ValueError
        When no first token separates the two answers.
    """

    def first_tokens(variants: Sequence[str]) -> set[int]:
        ids = set()
        for variant in variants:
            encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if encoded:
                ids.add(int(encoded[0]))
        return ids

    yes, no = first_tokens(_YES_VARIANTS), first_tokens(_NO_VARIANTS)
    yes, no = yes - no, no - yes
    if not yes or not no:
        raise ValueError(
            "handle: the tokenizer has no first token that tells 'Yes' from 'No'"
        )
    return sorted(yes), sorted(no)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[..., 0]


def persona_judge_utilities(
    handle: ModelHandle,
    prompt: str,
    responses: Sequence[str],
    personas: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    batch_size: int = 16,
    system_template: str = DEFAULT_JUDGE_SYSTEM,
    question_template: str = DEFAULT_JUDGE_QUESTION,
) -> SourceUtilities:
    """Utilities from a chat model asked, as each persona, whether each response is good.

    For persona t and response i the judge sees ``system_template.format(persona=...)`` as the
    system message and ``question_template.format(prompt=..., response=...)`` as the user
    message (with the chat template and a generation prompt; without a template, the two joined
    by a blank line and followed by ``"\\nAnswer:"``). From the next-token distribution,

        U[t, i] = log Σ_{y ∈ Yes} P(y) − log Σ_{n ∈ No} P(n),

    where Yes/No are the first tokens of the spellings in :func:`judge_answer_tokens`. All
    T × N judgements are scored in batches of ``batch_size`` (one forward pass each, no
    sampling), so the result is deterministic.

    Parameters
    ----------
    handle
        Causal LM (``kind="causal-lm"``) from ``load_model``.
    prompt
        The prompt the responses answer.
    responses
        N response texts.
    personas
        T persona descriptions written by the researcher.
    weights
        T type weights (normalised to sum 1); default uniform.
    labels
        T type labels; default the persona texts.
    batch_size
        Judgements per forward pass.
    system_template, question_template
        Judge prompt; fields ``{persona}`` and ``{prompt}``, ``{response}``.

    Returns
    -------
    SourceUtilities
        utilities of shape (T, N).
    """
    _handle("handle", handle, "causal-lm")
    if not isinstance(prompt, str):
        raise ValueError("prompt: expected a string")
    responses = _texts("responses", responses)
    personas = _texts("personas", personas, allow_empty_strings=False)
    w = _weights("weights", weights, len(personas))
    type_labels = _labels(labels, personas)
    _batch_size(batch_size)
    _check_template("system_template", system_template, ["persona"])
    _check_template("question_template", question_template, ["prompt", "response"])
    yes, no = judge_answer_tokens(handle.tokenizer)

    rows = []
    for persona in personas:
        system = system_template.format(persona=persona)
        for response in responses:
            question = question_template.format(prompt=prompt, response=response)
            if has_chat_template(handle.tokenizer):
                rows.append(encode_prompt(handle, question, system_prompt=system))
            else:
                rows.append(
                    encode_prompt(handle, f"{question}\nAnswer:", system_prompt=system)
                )
    logprobs = next_token_logprobs(
        handle, rows, token_ids=[*yes, *no], batch_size=batch_size
    )
    utilities = _logsumexp(logprobs[:, : len(yes)]) - _logsumexp(
        logprobs[:, len(yes) :]
    )
    return SourceUtilities(
        utilities.reshape(len(personas), len(responses)), w, type_labels
    )


# --------------------------------------------------------------------------------------------
# Embedding similarity
# --------------------------------------------------------------------------------------------


def embed_texts(
    handle: ModelHandle,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 256,
) -> np.ndarray:
    """Sentence embeddings: mean of the last hidden states over real tokens, L2-normalised.

    This is how all-MiniLM-L6-v2 is meant to be pooled (its ``1_Pooling`` config: mean tokens,
    then ``Normalize``). Texts longer than ``max_length`` tokens are truncated (MiniLM was
    trained with 256).

    Returns
    -------
    np.ndarray
        float64, shape (len(texts), hidden_size), rows of unit norm.
    """
    import torch

    _handle("handle", handle, "embedding")
    texts = _texts("texts", texts)
    _batch_size(batch_size)
    if (
        isinstance(max_length, bool)
        or not isinstance(max_length, int)
        or max_length < 2
    ):
        raise ValueError(f"max_length: expected an integer >= 2, got {max_length!r}")
    chunks = []
    with torch.inference_mode():
        for first in range(0, len(texts), batch_size):
            enc = handle.tokenizer(
                texts[first : first + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(handle.device)
            hidden = handle.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            chunks.append(
                torch.nn.functional.normalize(pooled, p=2, dim=-1)
                .double()
                .cpu()
                .numpy()
            )
    return np.concatenate(chunks, axis=0)


def embedding_utilities(
    handle: ModelHandle,
    responses: Sequence[str],
    personas: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    batch_size: int = 32,
    max_length: int = 256,
) -> SourceUtilities:
    """Utilities as cosine similarity between persona descriptions and responses.

    ``U[t, i] = cos(e(persona_t), e(response_i))`` with :func:`embed_texts` embeddings (the
    demo embedder is ``load_model("all-minilm-l6-v2")``). The prompt is not embedded: the
    persona description alone says what the type likes.

    Returns
    -------
    SourceUtilities
        utilities of shape (T, N), in [-1, 1].
    """
    responses = _texts("responses", responses)
    personas = _texts("personas", personas, allow_empty_strings=False)
    w = _weights("weights", weights, len(personas))
    type_labels = _labels(labels, personas)
    persona_vectors = embed_texts(
        handle, personas, batch_size=batch_size, max_length=max_length
    )
    response_vectors = embed_texts(
        handle, responses, batch_size=batch_size, max_length=max_length
    )
    utilities = np.clip(persona_vectors @ response_vectors.T, -1.0, 1.0)
    return SourceUtilities(utilities, w, type_labels)


# --------------------------------------------------------------------------------------------
# Reward models
# --------------------------------------------------------------------------------------------


def _reward_scores(
    handle: ModelHandle, prompt: str, responses: list[str], batch_size: int
) -> np.ndarray:
    import torch

    tokenizer, model = handle.tokenizer, handle.model
    limit = next(
        (
            v
            for v in (
                getattr(model.config, "max_position_embeddings", None),
                getattr(model.config, "n_positions", None),
            )
            if isinstance(v, int) and v > 0
        ),
        None,
    )
    truncation = {"truncation": True, "max_length": limit} if limit else {}
    scores = []
    with torch.inference_mode():
        for first in range(0, len(responses), batch_size):
            chunk = responses[first : first + batch_size]
            if has_chat_template(tokenizer):
                texts = [
                    format_chat(
                        tokenizer,
                        [
                            {"role": "user", "content": prompt},
                            {"role": "assistant", "content": r},
                        ],
                        add_generation_prompt=False,
                    )
                    for r in chunk
                ]
                enc = tokenizer(
                    texts,
                    add_special_tokens=False,
                    padding=True,
                    return_tensors="pt",
                    **truncation,
                )
            else:
                enc = tokenizer(
                    [prompt] * len(chunk),
                    chunk,
                    padding=True,
                    return_tensors="pt",
                    **truncation,
                )
            logits = model(**enc.to(handle.device)).logits
            scores.append(logits[:, 0].double().cpu().numpy())
    return np.concatenate(scores)


def reward_model_utilities(
    handles: Sequence[ModelHandle],
    prompt: str,
    responses: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    batch_size: int = 8,
) -> SourceUtilities:
    """Utilities from researcher-supplied reward models, one user type per model.

    Each handle is a one-logit sequence classifier (``load_model(ref,
    kind="sequence-classification")``); ``U[t, i]`` is its logit for (prompt, response i). The
    pair is rendered as a user/assistant conversation with the model's chat template when it
    has one, else encoded as a text pair (``tokenizer(prompt, response)``, as encoder reward
    models expect). Inputs longer than the model's context are truncated from the end.

    Parameters
    ----------
    handles
        T reward models.
    prompt, responses
        The prompt and its N responses.
    weights
        T type weights; default uniform.
    labels
        T type labels; default each model's ref.
    batch_size
        Responses per forward pass.

    Returns
    -------
    SourceUtilities
        utilities of shape (T, N).
    """
    if (
        isinstance(handles, ModelHandle)
        or not isinstance(handles, Sequence)
        or not handles
    ):
        raise ValueError("handles: expected a non-empty sequence of ModelHandles")
    for j, handle in enumerate(handles):
        _handle(f"handles[{j}]", handle, "sequence-classification")
        if int(getattr(handle.model.config, "num_labels", 1)) != 1:
            raise ValueError(
                f"handles[{j}]: {handle.ref!r} has {handle.model.config.num_labels} labels; "
                "a reward model must output a single logit"
            )
    if not isinstance(prompt, str):
        raise ValueError("prompt: expected a string")
    responses = _texts("responses", responses)
    w = _weights("weights", weights, len(handles))
    type_labels = _labels(labels, [h.ref for h in handles])
    _batch_size(batch_size)
    utilities = np.stack(
        [_reward_scores(h, prompt, responses, batch_size) for h in handles]
    )
    return SourceUtilities(utilities, w, type_labels)


# --------------------------------------------------------------------------------------------
# Uploaded CSV
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CsvRowError:
    """One problem in an uploaded utilities CSV; ``line`` is 1-based (the header is line 1)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class UtilitiesCSVError(ValueError):
    """An uploaded utilities CSV was rejected; ``errors`` lists every problem found (capped)."""

    def __init__(self, errors: list[CsvRowError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


_CSV_REQUIRED = ("type", "candidate", "utility")
_CSV_OPTIONAL = ("weight", "prompt")


def utilities_from_csv(
    text: str,
    *,
    n_candidates: int,
    prompt: str | None = None,
    max_errors: int = 20,
) -> SourceUtilities:
    """Parse utilities uploaded as a long-format CSV.

    Format: a header row, then one row per (type, candidate)::

        type,candidate,utility,weight
        novice,0,1.5,2
        novice,1,-0.25,2
        expert,0,0.0,1
        expert,1,3,1

    - ``type``: the user type's label (any non-empty text).
    - ``candidate``: the response's 0-based index in the pool, in ``[0, n_candidates)``.
    - ``utility``: a finite number; higher is preferred. Only its order within a type matters.
    - ``weight`` (optional column): the type's weight, repeated on its rows (blank cells allowed
      if at least one row of the type gives it); normalised to sum 1. Without the column, types
      are weighted equally.
    - ``prompt`` (optional column): which prompt a row belongs to, so one file can cover a whole
      study; then ``prompt`` must be passed and only rows whose cell equals it are used.

    Every type must give exactly one utility for every candidate. Column names are matched
    case-insensitively; other columns are rejected (they are usually typos).

    Raises
    ------
    UtilitiesCSVError
        A ``ValueError`` whose ``errors`` are :class:`CsvRowError` (line, message) pairs.
    ValueError
        For invalid arguments.
    """
    if not isinstance(text, str):
        raise ValueError("text: expected the CSV as a string (decode the upload first)")
    if (
        isinstance(n_candidates, bool)
        or not isinstance(n_candidates, int)
        or n_candidates < 1
    ):
        raise ValueError(
            f"n_candidates: expected an integer >= 1, got {n_candidates!r}"
        )
    errors: list[CsvRowError] = []

    def fail(line: int, message: str) -> None:
        errors.append(CsvRowError(line, message))
        if len(errors) >= max_errors:
            raise UtilitiesCSVError(errors)

    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(reader, None)
    if header is None:
        raise UtilitiesCSVError(
            [
                CsvRowError(
                    1, "the file is empty; expected a header type,candidate,utility"
                )
            ]
        )
    header_line = reader.line_num
    columns = [cell.strip().lower() for cell in header]
    unknown = [c for c in columns if c not in _CSV_REQUIRED + _CSV_OPTIONAL]
    missing = [c for c in _CSV_REQUIRED if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if unknown or missing or repeated:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
        if repeated:
            parts.append(f"repeated column(s) {', '.join(repeated)}")
        raise UtilitiesCSVError(
            [
                CsvRowError(
                    header_line,
                    "; ".join(parts)
                    + f" (allowed: {', '.join(_CSV_REQUIRED + _CSV_OPTIONAL)})",
                )
            ]
        )
    col = {name: columns.index(name) for name in columns}
    if "prompt" in col and prompt is None:
        raise ValueError(
            "prompt: the CSV has a prompt column; pass the prompt whose rows to use"
        )

    cells: dict[tuple[str, int], tuple[float, int]] = {}
    rejected: set[tuple[str, int]] = (
        set()
    )  # pairs whose row had an error: not reported missing again
    type_weights: dict[str, tuple[float, int] | None] = {}
    first_line: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            fail(line, f"expected {len(columns)} cells, got {len(row)}")
            continue
        if "prompt" in col and row[col["prompt"]].strip() != prompt.strip():
            continue
        label = row[col["type"]].strip()
        if not label:
            fail(line, "type is empty")
            continue
        first_line.setdefault(label, line)
        type_weights.setdefault(label, None)
        raw_candidate = row[col["candidate"]].strip()
        try:
            candidate = int(raw_candidate)
        except ValueError:
            fail(line, f"candidate {raw_candidate!r} is not an integer")
            continue
        if not 0 <= candidate < n_candidates:
            fail(line, f"candidate {candidate} is outside 0..{n_candidates - 1}")
            continue
        if (label, candidate) in cells:
            fail(
                line,
                f"type {label!r} candidate {candidate} repeats line {cells[label, candidate][1]}",
            )
            continue
        if "weight" in col and row[col["weight"]].strip():
            raw_weight = row[col["weight"]].strip()
            try:
                weight = float(raw_weight)
            except ValueError:
                weight = math.nan
            known = type_weights[label]
            if not math.isfinite(weight) or weight < 0:
                fail(line, f"weight {raw_weight!r} is not a finite number >= 0")
                rejected.add((label, candidate))
                continue
            if known is not None and known[0] != weight:
                fail(
                    line,
                    f"weight {weight:g} of type {label!r} differs from {known[0]:g} on line {known[1]}",
                )
                rejected.add((label, candidate))
                continue
            type_weights[label] = (weight, line)
        raw_utility = row[col["utility"]].strip()
        try:
            utility = float(raw_utility)
        except ValueError:
            utility = math.nan
        if not math.isfinite(utility):
            fail(line, f"utility {raw_utility!r} is not a finite number")
            rejected.add((label, candidate))
            continue
        cells[label, candidate] = (utility, line)

    if not errors and not first_line:
        where = f" for prompt {prompt!r}" if "prompt" in col else ""
        fail(header_line, f"no utility rows{where}")
    labels = list(first_line)
    for label in labels:
        absent = [
            i
            for i in range(n_candidates)
            if (label, i) not in cells and (label, i) not in rejected
        ]
        if absent:
            shown = ", ".join(map(str, absent[:10])) + (
                ", ..." if len(absent) > 10 else ""
            )
            fail(
                first_line[label],
                f"type {label!r} has no utility for candidate(s) {shown}",
            )
    if "weight" in col and labels:
        unweighted = [label for label in labels if type_weights[label] is None]
        if unweighted and len(unweighted) < len(labels):
            fail(
                first_line[unweighted[0]],
                f"type {unweighted[0]!r} has no weight while other types have one",
            )
        elif not unweighted and sum(type_weights[label][0] for label in labels) <= 0:  # type: ignore[index]
            fail(header_line, "all weights are zero")
    if errors:
        raise UtilitiesCSVError(sorted(errors, key=lambda e: e.line))

    utilities = np.array(
        [[cells[label, i][0] for i in range(n_candidates)] for label in labels],
        dtype=np.float64,
    )
    if "weight" in col and all(type_weights[label] is not None for label in labels):
        w = _weights(
            "weight", [type_weights[label][0] for label in labels], len(labels)
        )  # type: ignore[index]
    else:
        w = np.full(len(labels), 1.0 / len(labels))
    return SourceUtilities(utilities, w, labels)


# --------------------------------------------------------------------------------------------
# Combining sources
# --------------------------------------------------------------------------------------------


def combine_sources(
    parts: Sequence[SourceUtilities],
    weights: Sequence[float] | None = None,
    *,
    names: Sequence[str] | None = None,
) -> SourceUtilities:
    """Stack the types of several sources into one population.

    Type t of source j gets weight ``weights[j] · parts[j].weights[t]``, renormalised so that all
    weights sum to 1: ``weights`` says how much of the population each source is, and each
    source's own weights split that share among its types.

    Parameters
    ----------
    parts
        Sources for the same N responses (in the same order).
    weights
        One non-negative weight per source; default equal.
    names
        Optional source names; labels become ``"{name}: {label}"``. Labels must end up unique.

    Returns
    -------
    SourceUtilities
        utilities of shape (Σ_j T_j, N).
    """
    if (
        isinstance(parts, SourceUtilities)
        or not isinstance(parts, Sequence)
        or not parts
    ):
        raise ValueError("parts: expected a non-empty sequence of SourceUtilities")
    blocks, inner, labels = [], [], []
    n = None
    for j, part in enumerate(parts):
        if not (isinstance(part, tuple) and len(part) == 3):
            raise ValueError(f"parts[{j}]: expected (utilities, weights, type_labels)")
        u = np.asarray(part[0], dtype=np.float64)
        if u.ndim != 2 or u.shape[0] < 1 or u.shape[1] < 1:
            raise ValueError(
                f"parts[{j}]: utilities must have shape (T, N), got {u.shape}"
            )
        if not np.all(np.isfinite(u)):
            raise ValueError(f"parts[{j}]: utilities must be finite")
        if n is not None and u.shape[1] != n:
            raise ValueError(
                f"parts[{j}]: has {u.shape[1]} responses, parts[0] has {n}"
            )
        n = u.shape[1]
        part_labels = list(part[2])
        if len(part_labels) != u.shape[0]:
            raise ValueError(
                f"parts[{j}]: {u.shape[0]} types but {len(part_labels)} labels"
            )
        blocks.append(u)
        inner.append(_weights(f"parts[{j}].weights", part[1], u.shape[0]))
        labels.append(part_labels)
    source_w = _weights("weights", weights, len(parts))
    if names is not None:
        names = _texts("names", names, allow_empty_strings=False)
        if len(names) != len(parts):
            raise ValueError(f"names: expected {len(parts)} names, got {len(names)}")
        labels = [
            [f"{name}: {label}" for label in part_labels]
            for name, part_labels in zip(names, labels, strict=True)
        ]
    flat = [label for part_labels in labels for label in part_labels]
    duplicates = sorted({label for label in flat if flat.count(label) > 1})
    if duplicates:
        raise ValueError(
            f"parts: type labels {duplicates!r} occur in several sources; pass names= to tell them apart"
        )
    w = np.concatenate([sw * iw for sw, iw in zip(source_w, inner, strict=True)])
    return SourceUtilities(np.concatenate(blocks, axis=0), w / w.sum(), flat)
