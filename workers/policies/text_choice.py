"""The simulator's current choice rule over distinct shown texts (pure NumPy).

Superseded by `workers.policies.choice` (theory.md §1's per-position rule); kept only until the
simulated annotators draw their picks from `choice.choose` (issue #11).

A simulated annotator is drawn once per task from a population (theory.md §1): a user type t
with probability w_t. Shown distinct texts j = 1..n with utilities U[t, j], the type picks a text
of maximal utility, ties split uniformly (the exact rule the theory and the credit assume). With
Luce noise at temperature τ > 0 it picks j with probability ∝ exp(U[t, j] / τ) instead, a
random-utility model that makes the study harder to win than the model predicts.

Simulated annotators (`studies.simulated_annotators`) and the reproduction benchmark pick with
it. Not re-exported from `workers.policies`: import it from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["ChoiceModel", "choose"]


@dataclass(frozen=True)
class ChoiceModel:
    """Utilities of the shown texts for each user type.

    Attributes
    ----------
    utilities : (T, n) float array, the types' utilities for the n shown texts.
    weights : (T,) float array summing to 1.
    """

    utilities: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        u = np.asarray(self.utilities, dtype=np.float64)
        w = np.asarray(self.weights, dtype=np.float64)
        if u.ndim != 2 or u.shape[1] < 1 or u.shape[0] < 1:
            raise ValueError(f"utilities must be a non-empty (T, n) array, got shape {u.shape}")
        if not np.all(np.isfinite(u)):
            raise ValueError("utilities must be finite")
        if w.shape != (u.shape[0],):
            raise ValueError(f"weights must have shape ({u.shape[0]},), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise ValueError("weights must be non-negative and sum to 1")
        object.__setattr__(self, "utilities", u)
        object.__setattr__(self, "weights", w)


def choose(model: ChoiceModel, rng: np.random.Generator, *, luce_temperature: float | None = None) -> int:
    """Index (0-based, into the shown texts) that one simulated person picks.

    Parameters
    ----------
    model : the shown texts' utilities per type.
    rng : the random generator (draws the type, then the pick).
    luce_temperature : None for exact maximisation with uniform tie-breaking; τ > 0 for Luce
        (softmax) choice with probabilities ∝ exp(U[t, j] / τ).
    """
    if luce_temperature is not None and not luce_temperature > 0:
        raise ValueError(f"luce_temperature must be positive or None, got {luce_temperature!r}")
    t = rng.choice(len(model.weights), p=model.weights)
    u = model.utilities[t]
    if luce_temperature is None:
        top = np.flatnonzero(u == u.max())
        return int(rng.choice(top))
    z = (u - u.max()) / luce_temperature
    p = np.exp(z)
    return int(rng.choice(len(u), p=p / p.sum()))
