"""Guided decoding with trained doctors (theory.md §6.3), on the decode loop of workers.generation.

At every step and for every row, the next-token scores are

    s = α · log π_patient(· | x, y_<t) + Σ_j β_j · log π_doctor_j(· | x, y_<t)

over the vocabulary the models share (each log-softmax taken over it), then ``s / temperature``,
top-k, top-p and one draw from the row's own random stream. With α + Σβ ≠ 1 this also sharpens
or flattens the distribution; the temperature is applied after the combination.

The loop itself is ``workers.generation.sample_pool`` (its ``guides`` and ``alpha`` arguments):
batched, with one random stream per candidate, so a guided pool and a plain pool of the same
seed use common random numbers. Nothing in ``workers/generation.py`` had to change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workers.doctor.network import load_doctor
from workers.generation import ModelHandle, Sample, next_token_logprobs, sample_pool

__all__ = [
    "combine_logprobs",
    "guided_next_token_logprobs",
    "guided_sample",
    "load_guides",
]


def _log_normalise(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    out: np.ndarray = x - (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))
    return out


def _check_weights(alpha: float, betas: Sequence[float]) -> None:
    if not (
        isinstance(alpha, (int, float))
        and not isinstance(alpha, bool)
        and math.isfinite(alpha)
    ):
        raise ValueError(f"alpha: expected a finite number, got {alpha!r}")
    for j, beta in enumerate(betas):
        if not (
            isinstance(beta, (int, float))
            and not isinstance(beta, bool)
            and math.isfinite(beta)
        ):
            raise ValueError(f"betas[{j}]: expected a finite number, got {beta!r}")


def combine_logprobs(
    patient_logprobs: np.ndarray,
    doctor_logprobs: Sequence[np.ndarray],
    *,
    alpha: float = 1.0,
    betas: Sequence[float] = (),
) -> np.ndarray:
    """The guided next-token distribution at temperature 1, as log-probabilities.

    ``log softmax(α·patient + Σ_j β_j·doctor_j)`` along the last axis. Inputs are
    log-probabilities of the same shape (..., V); ``betas`` has one entry per doctor.
    """
    _check_weights(alpha, betas)
    base = np.asarray(patient_logprobs, dtype=np.float64)
    if len(doctor_logprobs) != len(betas):
        raise ValueError(
            f"betas: expected {len(doctor_logprobs)} values (one per doctor), got {len(betas)}"
        )
    total = alpha * base
    for j, (lq, beta) in enumerate(zip(doctor_logprobs, betas, strict=True)):
        lq = np.asarray(lq, dtype=np.float64)
        if lq.shape != base.shape:
            raise ValueError(
                f"doctor_logprobs[{j}]: expected shape {base.shape}, got {lq.shape}"
            )
        total = total + beta * lq
    return _log_normalise(total)


def _shared(logprobs: np.ndarray, width: int) -> np.ndarray:
    return _log_normalise(logprobs[:, :width])


def guided_next_token_logprobs(
    patient: ModelHandle,
    guides: Sequence[tuple[ModelHandle, float]],
    rows: Sequence[Sequence[int]],
    *,
    alpha: float = 1.0,
    batch_size: int = 16,
) -> np.ndarray:
    """The distribution guided decoding draws from after each row (temperature 1, no top-k/p).

    Each model's next-token log-probabilities (``next_token_logprobs``) are cut to the shared
    vocabulary, renormalised, and combined with :func:`combine_logprobs`. Shape (len(rows), V).
    """
    _check_weights(alpha, [b for _, b in guides])
    tables = [
        next_token_logprobs(m, rows, batch_size=batch_size)
        for m in (patient, *(g for g, _ in guides))
    ]
    width = min(t.shape[1] for t in tables)
    tables = [_shared(t, width) for t in tables]
    return combine_logprobs(
        tables[0], tables[1:], alpha=alpha, betas=[b for _, b in guides]
    )


def guided_sample(
    patient: ModelHandle,
    prompt: str,
    guides: Sequence[tuple[ModelHandle, float]],
    *,
    alpha: float = 1.0,
    n: int,
    seed: int,
    **decoding: Any,
) -> list[Sample]:
    """Sample ``n`` candidates of ``prompt`` guided by ``(doctor handle, β)`` pairs.

    ``decoding`` takes the other keyword arguments of ``workers.generation.sample_pool``
    (``indices``, ``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``, ``batch_size``,
    ``system_prompt``). Doctors must share the patient's tokenizer and device.
    """
    _check_weights(alpha, [b for _, b in guides])
    return sample_pool(
        patient,
        prompt,
        n=n,
        seed=seed,
        guides=list(guides),
        alpha=float(alpha),
        **decoding,
    )


def load_guides(
    specs: Sequence[tuple[str | Path, float]], *, device: str | None = None
) -> list[tuple[ModelHandle, float]]:
    """``(doctor folder, β)`` → ``(ModelHandle, β)``, checking each folder holds a trained doctor."""
    guides = []
    for j, (folder, beta) in enumerate(specs):
        _check_weights(1.0, [beta])
        try:
            guides.append((load_doctor(folder, device=device).handle, float(beta)))
        except ValueError as exc:
            raise ValueError(f"specs[{j}]: {exc}") from None
    return guides
