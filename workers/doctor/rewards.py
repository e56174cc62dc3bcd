"""Token rewards from the frozen patient (theory.md §6.1), batched and cacheable per candidate.

For a response y to prompt x, the patient scores every response token twice, once under a
*positive* system prompt and once under a *negative* one:

    Δ_t = | log π(y_t | pos, x, y_<t) − log π(y_t | neg, x, y_<t) |
    S_t = tanh( (Δ_t / mean_s Δ_s) / τ )              (mean over the response's own tokens)
    r_t = sign · S_t   where S_t > θ,   0 elsewhere

Sign convention: the sign comes from the response's role in a preference pair, not from the
sign of the log-probability difference: ``sign = +1`` for the preferred response y⁺ and ``−1``
for the dispreferred y⁻ (theory.md §6.1, "r_t = ±S_t"). So the cacheable quantity is the
magnitude ``S_t·[S_t > θ]`` of a candidate, which does not depend on which pairs it is in;
:meth:`TokenRewards.signed` applies the sign. When every Δ_t is 0 (or the response is empty)
S is 0 everywhere.

Responses are tokenised on their own (``add_special_tokens=False``) and appended to the
context ``encode_prompt(patient, prompt, system_prompt=...)``; no end-of-sequence token is
scored. torch is only touched through the model handle (functions import it lazily).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import MutableMapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from workers.generation import ModelHandle, encode_prompt, left_pad

__all__ = [
    "DEFAULT_NEGATIVE_SYSTEM",
    "DEFAULT_POSITIVE_SYSTEM",
    "RewardConfig",
    "RewardTerms",
    "TokenRewards",
    "patient_identity",
    "response_logprobs",
    "reward_cache_key",
    "reward_terms",
    "score_responses",
    "tokenize_response",
]

DEFAULT_POSITIVE_SYSTEM = "You are a helpful, accurate and thoughtful assistant. Give the best answer you can."
DEFAULT_NEGATIVE_SYSTEM = (
    "You are a minimal assistant. Give a short, less helpful and less accurate answer."
)
_KEY_VERSION = "ualign-token-rewards-v1"


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """How token rewards are computed.

    Attributes
    ----------
    positive_system, negative_system
        The two system prompts the patient is conditioned on.
    tau
        Temperature of the normalisation ``tanh((Δ/mean Δ)/τ)``; > 0. Default 1.
    theta
        Rewards with ``S_t ≤ θ`` are set to 0; in [0, 1). Default 0.1.
    max_response_tokens
        Responses are cut to this many tokens (training uses the same cut).
    """

    positive_system: str = DEFAULT_POSITIVE_SYSTEM
    negative_system: str = DEFAULT_NEGATIVE_SYSTEM
    tau: float = 1.0
    theta: float = 0.1
    max_response_tokens: int = 256

    def __post_init__(self) -> None:
        for name in ("positive_system", "negative_system"):
            if (
                not isinstance(getattr(self, name), str)
                or not getattr(self, name).strip()
            ):
                raise ValueError(f"{name}: expected a non-empty string")
        if self.positive_system == self.negative_system:
            raise ValueError(
                "negative_system: equals positive_system, so every Δ_t would be 0"
            )
        if not (
            isinstance(self.tau, (int, float))
            and math.isfinite(self.tau)
            and self.tau > 0
        ):
            raise ValueError(f"tau: expected a finite number > 0, got {self.tau!r}")
        if not (isinstance(self.theta, (int, float)) and 0 <= self.theta < 1):
            raise ValueError(f"theta: expected a number in [0, 1), got {self.theta!r}")
        n = self.max_response_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"max_response_tokens: expected an integer >= 1, got {n!r}"
            )


class RewardTerms(NamedTuple):
    """The intermediate quantities of theory.md §6.1 for one response, each float64 (T,)."""

    delta: np.ndarray
    strength: np.ndarray
    magnitude: np.ndarray


def reward_terms(
    logp_pos: np.ndarray, logp_neg: np.ndarray, *, tau: float, theta: float
) -> RewardTerms:
    """Δ_t, S_t and the thresholded magnitude ``S_t·[S_t > θ]`` from the two log-probability rows."""
    pos = np.asarray(logp_pos, dtype=np.float64)
    neg = np.asarray(logp_neg, dtype=np.float64)
    if pos.ndim != 1 or pos.shape != neg.shape:
        raise ValueError(
            f"logp_neg: expected the shape of logp_pos {pos.shape}, got {neg.shape}"
        )
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("logp_pos: contains NaN or infinity")
    delta = np.abs(pos - neg)
    mean = delta.mean() if delta.size else 0.0
    strength = np.tanh(delta / mean / tau) if mean > 0 else np.zeros_like(delta)
    magnitude = np.where(strength > theta, strength, 0.0)
    return RewardTerms(delta, strength, magnitude)


@dataclasses.dataclass(frozen=True, eq=False)
class TokenRewards:
    """Token rewards of one candidate response, unsigned (see the module docstring).

    Attributes
    ----------
    token_ids
        The response's tokens as scored (after the ``max_response_tokens`` cut).
    logp_pos, logp_neg
        Patient log-probabilities of each token under the positive / negative system prompt.
    delta, strength, magnitude
        Δ_t, S_t and ``S_t·[S_t > θ]``.
    """

    token_ids: tuple[int, ...]
    logp_pos: np.ndarray
    logp_neg: np.ndarray
    delta: np.ndarray
    strength: np.ndarray
    magnitude: np.ndarray

    def signed(self, sign: int) -> np.ndarray:
        """``r_t``: ``+magnitude`` for a preferred response (``sign=1``), ``−magnitude`` for ``−1``."""
        if sign not in (1, -1):
            raise ValueError(f"sign: expected 1 or -1, got {sign!r}")
        return sign * self.magnitude

    def to_json(self) -> dict[str, Any]:
        """Plain lists, for storing in a cache row; :meth:`from_json` inverts it."""
        return {
            "token_ids": list(self.token_ids),
            "logp_pos": self.logp_pos.tolist(),
            "logp_neg": self.logp_neg.tolist(),
            "delta": self.delta.tolist(),
            "strength": self.strength.tolist(),
            "magnitude": self.magnitude.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenRewards:
        arrays = {
            k: np.asarray(data[k], dtype=np.float64)
            for k in ("logp_pos", "logp_neg", "delta", "strength", "magnitude")
        }
        return cls(token_ids=tuple(int(t) for t in data["token_ids"]), **arrays)


def patient_identity(handle: ModelHandle | str) -> dict[str, Any]:
    """What identifies the patient in cache keys and doctor hashes: ref, revision, folder, dtype."""
    if isinstance(handle, ModelHandle):
        return {
            "ref": handle.ref,
            "revision": handle.revision,
            "name_or_path": handle.name_or_path,
            "dtype": handle.dtype,
        }
    return {"ref": str(handle), "revision": None, "name_or_path": None, "dtype": None}


def reward_cache_key(
    patient: ModelHandle | str, prompt: str, response: str, config: RewardConfig
) -> str:
    """sha256 (hex) of (candidate text, its prompt, patient, both system prompts, τ, θ, the token cut)."""
    material = {
        "v": _KEY_VERSION,
        "patient": patient_identity(patient),
        "prompt": prompt,
        "response": response,
        **dataclasses.asdict(config),
    }
    return hashlib.sha256(
        json.dumps(material, sort_keys=True, ensure_ascii=True).encode()
    ).hexdigest()


def tokenize_response(handle: ModelHandle, response: str, max_tokens: int) -> list[int]:
    """Token ids of ``response`` on its own (no special tokens), cut to ``max_tokens``."""
    return list(handle.tokenizer(response, add_special_tokens=False)["input_ids"])[
        :max_tokens
    ]


def _pad_id(handle: ModelHandle) -> int:
    tokenizer = handle.tokenizer
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def _check_context(handle: ModelHandle, length: int, what: str) -> None:
    config = handle.model.config
    for name in ("max_position_embeddings", "n_positions"):
        limit = getattr(config, name, None)
        if isinstance(limit, int) and limit > 0:
            if length > limit:
                raise ValueError(
                    f"{what}: {length} tokens exceed the context of {handle.ref!r} ({limit})"
                )
            return


def response_logprobs(
    handle: ModelHandle,
    contexts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
) -> list[np.ndarray]:
    """``log π(y_t | context, y_<t)`` for every token of every response (teacher forcing).

    Rows are sorted by length and left-padded (positions counted from each row's first real
    token, as in ``workers.generation``), ``batch_size`` per forward pass. Returns float64
    arrays, one per response, of its length (empty responses give empty arrays).
    """
    torch = _torch()
    if len(contexts) != len(responses):
        raise ValueError("responses: expected one per context")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    rows = [list(c) + list(r) for c, r in zip(contexts, responses, strict=True)]
    for i, (context, row) in enumerate(zip(contexts, rows, strict=True)):
        if not context:
            raise ValueError(f"contexts[{i}]: is empty")
        _check_context(handle, len(row), f"responses[{i}]")
    out: list[np.ndarray] = [np.zeros(0)] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    with torch.inference_mode():
        for first in range(0, len(order), batch_size):
            chunk = order[first : first + batch_size]
            ids, mask, positions = left_pad(
                [rows[i] for i in chunk], pad_id=_pad_id(handle), device=handle.device
            )
            logits = handle.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=False,
            ).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(
                -1, ids[:, 1:, None]
            )[..., 0]
            for j, i in enumerate(chunk):
                n = len(responses[i])
                out[i] = (
                    logp[j, logp.shape[1] - n :].double().cpu().numpy()
                    if n
                    else np.zeros(0)
                )
    return out


def _torch() -> Any:
    import torch  # in-function import: keeps torch out of the web process

    return torch


def score_responses(
    patient: ModelHandle,
    requests: Sequence[tuple[str, str]],
    config: RewardConfig,
    *,
    cache: MutableMapping[str, TokenRewards] | None = None,
    batch_size: int = 8,
) -> list[TokenRewards]:
    """Token rewards of ``(prompt, response)`` candidates, computing only those not in ``cache``.

    Every missing candidate is scored under both system prompts in batched forward passes of
    ``batch_size`` rows; the results are stored in ``cache`` under :func:`reward_cache_key`
    (any mutable mapping: a dict, or a store backed by the database).

    Returns
    -------
    list[TokenRewards]
        One per request, in order.
    """
    if not isinstance(patient, ModelHandle) or patient.kind != "causal-lm":
        raise ValueError("patient: expected a causal-lm ModelHandle from load_model")
    cache = {} if cache is None else cache
    keys = [reward_cache_key(patient, p, r, config) for p, r in requests]
    where: dict[str, tuple[str, str]] = {}
    for key, request in zip(keys, requests, strict=True):
        if key not in cache:
            where.setdefault(key, request)
    missing = list(where)
    if missing:
        token_rows = [
            tokenize_response(patient, where[k][1], config.max_response_tokens)
            for k in missing
        ]
        contexts = [
            encode_prompt(patient, where[k][0], system_prompt=system)
            for system in (config.positive_system, config.negative_system)
            for k in missing
        ]
        logps = response_logprobs(
            patient, contexts, token_rows * 2, batch_size=batch_size
        )
        for n, key in enumerate(missing):
            pos, neg = logps[n], logps[len(missing) + n]
            terms = reward_terms(pos, neg, tau=config.tau, theta=config.theta)
            cache[key] = TokenRewards(tuple(token_rows[n]), pos, neg, *terms)
    return [cache[k] for k in keys]
