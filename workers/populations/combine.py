"""One population from several sources: :class:`SourceUtilities` and :func:`combine_sources`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ._validation import _texts, _weights


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
    checked: list[SourceUtilities] = []
    for j, part in enumerate(parts):
        checked.append(_check_part(j, part, checked[0] if checked else None))
    source_w = _weights("weights", weights, len(parts))
    labels = [part.type_labels for part in checked]
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
    w = np.concatenate(
        [sw * part.weights for sw, part in zip(source_w, checked, strict=True)]
    )
    utilities = np.concatenate([part.utilities for part in checked], axis=0)
    return SourceUtilities(utilities, w / w.sum(), flat)


def _check_part(
    j: int, part: SourceUtilities, first: SourceUtilities | None
) -> SourceUtilities:
    """``parts[j]`` as float64 utilities (T, N) with normalised weights, N as in ``first``."""
    if not (isinstance(part, tuple) and len(part) == 3):
        raise ValueError(f"parts[{j}]: expected (utilities, weights, type_labels)")
    u = np.asarray(part[0], dtype=np.float64)
    if u.ndim != 2 or u.shape[0] < 1 or u.shape[1] < 1:
        raise ValueError(f"parts[{j}]: utilities must have shape (T, N), got {u.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError(f"parts[{j}]: utilities must be finite")
    if first is not None and u.shape[1] != first.utilities.shape[1]:
        raise ValueError(
            f"parts[{j}]: has {u.shape[1]} responses, parts[0] has {first.utilities.shape[1]}"
        )
    labels = list(part[2])
    if len(labels) != u.shape[0]:
        raise ValueError(f"parts[{j}]: {u.shape[0]} types but {len(labels)} labels")
    return SourceUtilities(
        u, _weights(f"parts[{j}].weights", part[1], u.shape[0]), labels
    )
