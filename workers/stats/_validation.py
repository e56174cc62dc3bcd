"""Input validation for :mod:`workers.stats`, and the integer codes its estimators work on.

One ``_iv_*`` function per public entry point (the scipy ``_bootstrap_iv`` habit, as in
:mod:`workers.policies`), built from the small ``_check_*`` helpers below. Every failure raises
:class:`ValueError` whose message starts with the name of the offending argument.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return (
        isinstance(x, (int, float, np.integer, np.floating))
        and not isinstance(x, bool)
        and math.isfinite(x)
    )


def _check_1d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _check_credit(x: Any, name: str = "credit") -> FloatArray:
    arr = _check_1d(x, name)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN (drop excluded judgments first)")
    if (arr < 0).any() or (arr > 1).any():
        raise ValueError(
            f"{name} must lie in [0, 1], got values from {arr.min():.3g} to {arr.max():.3g}"
        )
    return arr


def _check_ids(x: Any, name: str, n: int) -> IntArray:
    """Cluster labels of any hashable dtype → integer codes 0..G-1."""
    arr = _check_1d(x, name)
    if arr.shape[0] != n:
        raise ValueError(
            f"{name} must have the same length as credit ({n}), got {arr.shape[0]}"
        )
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN")
    if arr.dtype == object and any(v is None for v in arr):
        raise ValueError(f"{name} must not contain None")
    return np.unique(arr, return_inverse=True)[1].astype(np.intp).reshape(-1)


def _check_confidence(confidence: Any) -> float:
    if (
        not isinstance(confidence, (int, float))
        or isinstance(confidence, bool)
        or not 0 < confidence < 1
    ):
        raise ValueError(
            f"confidence must be a number strictly between 0 and 1, got {confidence!r}"
        )
    return float(confidence)


def _check_n_resamples(n_resamples: Any) -> int:
    if (
        not isinstance(n_resamples, (int, np.integer))
        or isinstance(n_resamples, bool)
        or n_resamples < 1
    ):
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    return int(n_resamples)


def _check_weights(x: Any, n: int) -> FloatArray:
    if x is None:
        return np.ones(n)
    arr = _check_1d(x, "weights")
    if arr.shape[0] != n:
        raise ValueError(
            f"weights must have the same length as credit ({n}), got {arr.shape[0]}"
        )
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights must be numeric: {exc}") from exc
    if not np.all(np.isfinite(arr)) or (arr <= 0).any():
        raise ValueError("weights must be finite and positive")
    return arr


def _check_decided(x: Any, n: int) -> npt.NDArray[np.bool_]:
    if x is None:
        return np.zeros(n, dtype=bool)
    arr = _check_1d(x, "decided")
    if arr.shape[0] != n:
        raise ValueError(
            f"decided must have the same length as credit ({n}), got {arr.shape[0]}"
        )
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError("decided must hold booleans")
    return arr.astype(bool)


def _iv_win_rate(
    credit: Any,
    prompt_ids: Any,
    annotator_ids: Any,
    confidence: Any,
    n_resamples: Any,
    weights: Any = None,
    decided: Any = None,
) -> tuple[
    FloatArray,
    IntArray,
    IntArray,
    FloatArray,
    npt.NDArray[np.bool_],
    float,
    int,
]:
    y = _check_credit(credit)
    p = _check_ids(prompt_ids, "prompt_ids", y.size)
    a = _check_ids(annotator_ids, "annotator_ids", y.size)
    w, d = _check_weights(weights, y.size), _check_decided(decided, y.size)
    return y, p, a, w, d, _check_confidence(confidence), _check_n_resamples(n_resamples)


def _recode(codes: IntArray) -> IntArray:
    return np.unique(codes, return_inverse=True)[1].reshape(-1)
