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
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
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
    "CandidateColumn",
    "CsvRowError",
    "SourceUtilities",
    "UtilitiesCSVError",
    "UtilitiesTable",
    "UtilityRow",
    "combine_sources",
    "embed_texts",
    "embedding_utilities",
    "judge_answer_tokens",
    "persona_judge_utilities",
    "read_utilities_csv",
    "reward_model_utilities",
    "utilities_by_group",
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


_CSV_REQUIRED = ("type", "candidate_id", "utility")
_CSV_OPTIONAL = ("weight",)


@dataclasses.dataclass(frozen=True)
class CandidateColumn:
    """Where the utilities of one candidate id go: column ``column`` of group ``group`` (a prompt).

    ``names`` gives, for each checking column a CSV may carry (for example ``"prompt_id"``), the
    cell values that fit this candidate; a row whose cell is none of them is an error.
    """

    group: Hashable
    column: int
    names: Mapping[str, Collection[str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class UtilityRow:
    """One well-formed row of a utilities CSV, before its candidate id is resolved."""

    line: int
    type: str
    candidate_id: int
    utility: float
    weight: float | None
    checks: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class UtilitiesTable:
    """A utilities CSV read row by row (:func:`read_utilities_csv`).

    ``rows`` are the well-formed rows, ``errors`` the problems of the others (resolving the
    ids with :func:`utilities_by_group` adds its own and raises them all together), and
    ``rejected`` the (type, candidate id) pairs of rows with errors, which are not reported
    missing again.
    """

    rows: tuple[UtilityRow, ...]
    errors: tuple[CsvRowError, ...]
    header_line: int
    has_weight: bool
    rejected: frozenset[tuple[str, int]]

    @property
    def candidate_ids(self) -> set[int]:
        return {row.candidate_id for row in self.rows}


def _collect(errors: list[CsvRowError], max_errors: int):
    def fail(line: int, message: str) -> None:
        errors.append(CsvRowError(line, message))
        if len(errors) >= max_errors:
            raise UtilitiesCSVError(sorted(errors, key=lambda e: e.line))

    return fail


def _max_errors(max_errors: int) -> None:
    if (
        isinstance(max_errors, bool)
        or not isinstance(max_errors, int)
        or max_errors < 1
    ):
        raise ValueError(f"max_errors: expected an integer >= 1, got {max_errors!r}")


_CSV_MAX_CELL = 1000  # characters; labels, ids and numbers are far shorter


def _csv_rows(reader) -> Iterator[list[str]]:
    """The reader's rows; a malformed one (or a cell past csv's field size limit) is a CsvRowError."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise UtilitiesCSVError([CsvRowError(reader.line_num, f"malformed CSV ({exc})")]) from None
        yield row


def read_utilities_csv(
    text: str,
    *,
    check_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    max_errors: int = 20,
) -> UtilitiesTable:
    """Read a long-format utilities CSV whose rows name candidates by their id.

    Format: a header row, then one row per (type, candidate)::

        type,candidate_id,utility,weight
        novice,101,1.5,2
        novice,102,-0.25,2
        expert,101,0.0,1
        expert,102,3,1

    - ``type``: the user type's label (any non-empty text).
    - ``candidate_id``: the candidate's database id (an integer); which prompt and which column
      it stands for is resolved later (:func:`utilities_by_group`).
    - ``utility``: a finite number; higher is preferred. Only its order within a type matters.
    - ``weight`` (optional column): the type's weight, repeated on its rows (blank cells allowed
      if at least one row of the type gives it).
    - ``check_columns`` (optional columns, named by the caller, for example ``prompt_id``): cells
      checked against the candidate when the ids are resolved.
    - ``ignore_columns`` (optional columns, named by the caller): allowed and not read.

    Column names are matched case-insensitively; other columns are rejected (they are usually
    typos). Problems of the header raise at once; problems of rows are collected in
    ``errors`` (with their line numbers) and raised with those of :func:`utilities_by_group`,
    or at once when there are ``max_errors`` of them.

    Raises
    ------
    UtilitiesCSVError
        A ``ValueError`` whose ``errors`` are :class:`CsvRowError` (line, message) pairs.
    ValueError
        For invalid arguments.
    """
    if not isinstance(text, str):
        raise ValueError("text: expected the CSV as a string (decode the upload first)")
    checks = tuple(c.strip().lower() for c in check_columns)
    ignored = tuple(c.strip().lower() for c in ignore_columns)
    for name, names in (("check_columns", checks), ("ignore_columns", ignored)):
        if any(not c or c in _CSV_REQUIRED + _CSV_OPTIONAL for c in names):
            raise ValueError(
                f"{name}: expected names other than {', '.join(_CSV_REQUIRED + _CSV_OPTIONAL)}"
            )
    _max_errors(max_errors)
    errors: list[CsvRowError] = []
    fail = _collect(errors, max_errors)

    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    lines = _csv_rows(reader)
    header = next(lines, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(lines, None)
    if header is None:
        raise UtilitiesCSVError(
            [
                CsvRowError(
                    1, "the file is empty; expected a header type,candidate_id,utility"
                )
            ]
        )
    header_line = reader.line_num
    columns = [cell.strip().lower() for cell in header]
    allowed = _CSV_REQUIRED + _CSV_OPTIONAL + checks + ignored
    unknown = [c for c in columns if c not in allowed]
    missing = [c for c in _CSV_REQUIRED if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if unknown or missing or repeated:
        parts = []
        if "candidate" in columns and "candidate_id" in missing:
            parts.append(
                "the candidate column is now candidate_id: the candidate's id (as in the candidates "
                "export and the admin), no longer its position"
            )
            unknown.remove("candidate")
            missing.remove("candidate_id")
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
        if repeated:
            parts.append(f"repeated column(s) {', '.join(repeated)}")
        raise UtilitiesCSVError(
            [
                CsvRowError(
                    header_line, "; ".join(parts) + f" (allowed: {', '.join(allowed)})"
                )
            ]
        )
    col = {name: columns.index(name) for name in columns}
    present_checks = tuple(c for c in checks if c in col)

    rows: list[UtilityRow] = []
    rejected: set[tuple[str, int]] = set()
    seen: dict[tuple[str, int], int] = {}
    for row in lines:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if any(len(cell) > _CSV_MAX_CELL for cell in row):
            fail(line, f"a cell is longer than {_CSV_MAX_CELL} characters")
            continue
        if len(row) != len(columns):
            fail(line, f"expected {len(columns)} cells, got {len(row)}")
            continue
        label = row[col["type"]].strip()
        if not label:
            fail(line, "type is empty")
            continue
        raw_id = row[col["candidate_id"]].strip()
        try:
            candidate_id = int(raw_id)
        except ValueError:
            fail(line, f"candidate_id {raw_id!r} is not an integer")
            continue
        key = (label, candidate_id)
        if key in seen:
            fail(
                line,
                f"type {label!r} candidate {candidate_id} repeats line {seen[key]}",
            )
            continue
        seen[key] = line
        weight = None
        if "weight" in col and row[col["weight"]].strip():
            raw_weight = row[col["weight"]].strip()
            try:
                weight = float(raw_weight)
            except ValueError:
                weight = math.nan
            if not math.isfinite(weight) or weight < 0:
                fail(line, f"weight {raw_weight!r} is not a finite number >= 0")
                rejected.add(key)
                continue
        raw_utility = row[col["utility"]].strip()
        try:
            utility = float(raw_utility)
        except ValueError:
            utility = math.nan
        if not math.isfinite(utility):
            fail(line, f"utility {raw_utility!r} is not a finite number")
            rejected.add(key)
            continue
        cells = tuple((name, row[col[name]].strip()) for name in present_checks)
        rows.append(UtilityRow(line, label, candidate_id, utility, weight, cells))
    if not rows and not errors:
        fail(header_line, "no utility rows")
    return UtilitiesTable(
        tuple(rows), tuple(errors), header_line, "weight" in col, frozenset(rejected)
    )


def _clip(value: str, limit: int = 24) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _shown(values: Sequence[object], limit: int = 10) -> str:
    return ", ".join(map(str, values[:limit])) + (
        ", ..." if len(values) > limit else ""
    )


def utilities_by_group(
    table: UtilitiesTable,
    *,
    candidates: Mapping[int, CandidateColumn],
    sizes: Mapping[Hashable, int],
    refused: Mapping[int, str] | None = None,
    group_names: Mapping[Hashable, str] | None = None,
    max_errors: int = 20,
) -> dict[Hashable, SourceUtilities]:
    """Resolve the candidate ids of ``table`` into one :class:`SourceUtilities` per group.

    Parameters
    ----------
    table
        From :func:`read_utilities_csv`; its row errors are raised together with these.
    candidates
        Candidate id → :class:`CandidateColumn` (its group and column there) for every
        candidate the file may name.
    sizes
        Group → number of columns N. Every group must be covered: each type that appears in a
        group gives exactly one utility to each of its N columns, and a group without rows is
        an error.
    refused
        Candidate id → why it can't be used (for example ``"belongs to another study"``), for ids
        that exist but are not in ``candidates``; other unknown ids are reported as such.
    group_names
        Group → how messages name it (default ``repr(group)``).

    Returns
    -------
    dict
        Group → ``SourceUtilities`` with utilities (T_g, N_g) in column order, weights (T_g,)
        (normalised; equal without a weight column) and type labels in order of first appearance.
        Types are per group: a label's weight must agree within a group, not across groups.

    Raises
    ------
    UtilitiesCSVError
        Every problem found (row errors first read, then unknown ids, mismatched checking cells,
        missing utilities, weights), sorted by line, capped at ``max_errors``.
    ValueError
        For invalid arguments.
    """
    _max_errors(max_errors)
    refused = refused or {}
    group_names = group_names or {}
    for group, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"sizes: group {group!r} needs an integer number of columns >= 1, got {n!r}"
            )
    by_column: dict[Hashable, dict[int, int]] = {group: {} for group in sizes}
    for candidate_id, ref in candidates.items():
        if ref.group not in sizes or not 0 <= ref.column < sizes[ref.group]:
            raise ValueError(
                f"candidates: id {candidate_id} points outside sizes ({ref.group!r}, column {ref.column})"
            )
        if ref.column in by_column[ref.group]:
            raise ValueError(
                f"candidates: ids {by_column[ref.group][ref.column]} and {candidate_id} share a column"
            )
        by_column[ref.group][ref.column] = candidate_id

    def name(group: Hashable) -> str:
        return group_names.get(group, repr(group))

    errors = list(table.errors)
    fail = _collect(errors, max_errors)
    rejected = set(table.rejected)
    cells: dict[Hashable, dict[tuple[str, int], float]] = {group: {} for group in sizes}
    first_line: dict[Hashable, dict[str, int]] = {group: {} for group in sizes}
    weights: dict[Hashable, dict[str, tuple[float, int]]] = {
        group: {} for group in sizes
    }
    for row in table.rows:
        ref = candidates.get(row.candidate_id)
        if ref is None:
            reason = refused.get(row.candidate_id)
            fail(
                row.line,
                f"candidate {row.candidate_id} {reason}"
                if reason
                else f"no candidate has id {row.candidate_id}",
            )
            continue
        group = ref.group
        first_line[group].setdefault(row.type, row.line)
        key = (row.type, row.candidate_id)
        wrong = [
            (c, v) for c, v in row.checks if c in ref.names and v not in ref.names[c]
        ]
        if wrong:
            shown = ", ".join(f"{c} {_clip(v)!r}" for c, v in wrong)
            fail(
                row.line,
                f"{shown} does not match candidate {row.candidate_id} (of {name(group)})",
            )
            rejected.add(key)
            continue
        if row.weight is not None:
            known = weights[group].get(row.type)
            if known is not None and known[0] != row.weight:
                fail(
                    row.line,
                    f"weight {row.weight:g} of type {row.type!r} differs from {known[0]:g} on line {known[1]}",
                )
                rejected.add(key)
                continue
            weights[group].setdefault(row.type, (row.weight, row.line))
        cells[group][row.type, ref.column] = row.utility

    for group, n in sizes.items():
        labels = first_line[group]
        if not labels:
            fail(
                table.header_line,
                f"no utility rows for {name(group)} (candidates {_shown(sorted(by_column[group].values()))})",
            )
            continue
        for label, line in labels.items():
            absent = [
                by_column[group].get(i, f"column {i}")
                for i in range(n)
                if (label, i) not in cells[group]
                and (label, by_column[group].get(i)) not in rejected
            ]
            if absent:
                fail(
                    line,
                    f"type {label!r} has no utility for candidate(s) {_shown(absent)} of {name(group)}",
                )
        if table.has_weight:
            unweighted = [label for label in labels if label not in weights[group]]
            if unweighted and len(unweighted) < len(labels):
                fail(
                    labels[unweighted[0]],
                    f"type {unweighted[0]!r} has no weight while other types of {name(group)} have one",
                )
            elif (
                not unweighted
                and sum(weights[group][label][0] for label in labels) <= 0
            ):
                fail(table.header_line, f"all weights of {name(group)} are zero")
    if errors:
        raise UtilitiesCSVError(sorted(errors, key=lambda e: e.line))

    result: dict[Hashable, SourceUtilities] = {}
    for group, n in sizes.items():
        labels = list(first_line[group])
        u = np.array(
            [[cells[group][label, i] for i in range(n)] for label in labels],
            dtype=np.float64,
        )
        if table.has_weight and all(label in weights[group] for label in labels):
            w = _weights(
                "weight", [weights[group][label][0] for label in labels], len(labels)
            )
        else:
            w = np.full(len(labels), 1.0 / len(labels))
        result[group] = SourceUtilities(u, w, labels)
    return result


def utilities_from_csv(
    text: str,
    *,
    candidates: Mapping[int, CandidateColumn],
    sizes: Mapping[Hashable, int],
    refused: Mapping[int, str] | None = None,
    check_columns: Sequence[str] = (),
    ignore_columns: Sequence[str] = (),
    group_names: Mapping[Hashable, str] | None = None,
    max_errors: int = 20,
) -> dict[Hashable, SourceUtilities]:
    """:func:`read_utilities_csv` then :func:`utilities_by_group`: one ``SourceUtilities`` per group.

    Use the two steps when the ids to ``refuse`` depend on which ids the file names.

    Examples
    --------
    >>> where = {101: CandidateColumn("p1", 0), 102: CandidateColumn("p1", 1)}
    >>> text = "type,candidate_id,utility\\nme,102,1\\nme,101,0\\n"
    >>> utilities_from_csv(text, candidates=where, sizes={"p1": 2})["p1"].utilities
    array([[0., 1.]])
    """
    table = read_utilities_csv(
        text,
        check_columns=check_columns,
        ignore_columns=ignore_columns,
        max_errors=max_errors,
    )
    return utilities_by_group(
        table,
        candidates=candidates,
        sizes=sizes,
        refused=refused,
        group_names=group_names,
        max_errors=max_errors,
    )


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
