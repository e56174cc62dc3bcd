"""Model-backed population sources: persona judges, embedding similarity, reward models.

Each returns a :class:`SourceUtilities` for one prompt's N responses. torch is touched only
through the model handles of :mod:`workers.generation` and inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.generation import (
    ModelHandle,
    encode_prompt,
    format_chat,
    has_chat_template,
    next_token_logprobs,
)

from ._validation import _texts, _weights
from .combine import SourceUtilities

DEFAULT_JUDGE_SYSTEM = "You are the following person: {persona}\nJudge answers from this person's point of view."


DEFAULT_JUDGE_QUESTION = (
    "Here is a question and an answer.\n\n"
    "Question: {prompt}\n\n"
    "Answer: {response}\n\n"
    "Would you, as this person, consider this answer good? Reply with just Yes or No."
)


_YES_VARIANTS = ("Yes", "yes", " Yes", " yes", "YES")


_NO_VARIANTS = ("No", "no", " No", " no", "NO")


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


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


def judge_answer_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
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
    lse: np.ndarray = (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[
        ..., 0
    ]
    return lse


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

    rows = _judge_rows(
        handle, prompt, responses, personas, system_template, question_template
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


def _judge_rows(
    handle: ModelHandle,
    prompt: str,
    responses: list[str],
    personas: list[str],
    system_template: str,
    question_template: str,
) -> list[list[int]]:
    """Token ids of the T × N judge prompts, persona-major (row ``t * N + i``)."""
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
    return rows


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
    import torch  # in-function import: keeps torch out of the web process

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
    """The reward model's logit for (prompt, response), per response; float64 (N,)."""
    import torch  # in-function import: keeps torch out of the web process

    model = handle.model
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
            enc = _reward_inputs(handle.tokenizer, prompt, chunk, truncation)
            logits = model(**enc.to(handle.device)).logits
            scores.append(logits[:, 0].double().cpu().numpy())
    return np.concatenate(scores)


def _reward_inputs(
    tokenizer: Any, prompt: str, chunk: list[str], truncation: dict[str, Any]
) -> Any:
    """Encode (prompt, response) pairs: a chat-formatted conversation, else a text pair."""
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
        return tokenizer(
            texts,
            add_special_tokens=False,
            padding=True,
            return_tensors="pt",
            **truncation,
        )
    return tokenizer(
        [prompt] * len(chunk),
        chunk,
        padding=True,
        return_tensors="pt",
        **truncation,
    )


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
