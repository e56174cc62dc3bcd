"""Checks shared by the population sources: text lists and per-type weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
    normalised: np.ndarray = w / total
    return normalised
