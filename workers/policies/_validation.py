"""Input validation for :mod:`workers.policies`.

One ``_iv_*`` function per public entry point (the scipy ``_bootstrap_iv`` habit), built
from the small ``_check_*`` helpers below. Every failure raises :class:`ValueError` whose
message starts with the name of the offending argument.

Conventions (documented once here, referenced from the public docstrings):

* **Weights** of a population must be finite, non-negative and sum to 1 within
  ``SIMPLEX_ATOL``; they are then divided by their sum so that they sum to 1 to rounding.
  Counts (for example participants per type) are *rejected*, not normalised silently:
  pass ``counts / counts.sum()``.
* **Policies** (and references) must be 1-D, finite, have entries ``>= -SIMPLEX_ATOL``
  and sum to 1 within ``SIMPLEX_ATOL``. Entries in ``[-SIMPLEX_ATOL, 0)`` are clipped to
  0 and the vector is divided by its sum. Anything further from the simplex is rejected.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

# population.py imports this module too: bind the module (not its names), which Python
# resolves even while population.py is still executing.
from . import population as _population

if TYPE_CHECKING:
    from .population import Population

SIMPLEX_ATOL = 1e-9


def _check_finite_array(x: Any, name: str, ndim: int) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values (no NaN or inf)")
    return arr


def _check_simplex(x: Any, name: str, n: int | None = None) -> npt.NDArray[np.float64]:
    """Return ``x`` as a float64 probability vector of length ``n`` (see module notes)."""
    arr = _check_finite_array(x, name, 1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name} must have length {n} (one entry per response), got {arr.shape[0]}"
        )
    if np.any(arr < -SIMPLEX_ATOL):
        raise ValueError(f"{name} must be non-negative, min entry is {arr.min():.3g}")
    total = float(arr.sum())
    if abs(total - 1.0) > SIMPLEX_ATOL:
        raise ValueError(
            f"{name} must sum to 1 (a policy on the simplex), sums to {total:.12g}"
        )
    arr = np.clip(arr, 0.0, None)
    normalised: npt.NDArray[np.float64] = arr / arr.sum()
    return normalised


def _check_int(x: Any, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    if int(x) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {int(x)}")
    return int(x)


def _check_float(x: Any, name: str, *, minimum: float, strict: bool) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {x!r}")
    val = float(x)
    if not np.isfinite(val):
        raise ValueError(f"{name} must be finite, got {val}")
    if (strict and val <= minimum) or (not strict and val < minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {val}")
    return val


def _check_population(pop: Any, name: str = "pop") -> Population:
    if not isinstance(pop, _population.Population):
        raise ValueError(f"{name} must be a Population, got {type(pop).__name__}")
    return pop


def _check_rng(rng: Any, name: str = "rng") -> np.random.Generator:
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng(rng)
    if isinstance(rng, bool) or not isinstance(
        rng, numbers.Integral | np.random.SeedSequence
    ):
        raise ValueError(
            f"{name} must be a numpy Generator, an int seed or None, got {type(rng).__name__}"
        )
    if isinstance(rng, numbers.Integral) and int(rng) < 0:
        raise ValueError(f"{name} must be a non-negative seed, got {int(rng)}")
    return np.random.default_rng(rng)


def _check_max_iter(x: Any, name: str = "max_iter") -> int | None:
    if x is None:
        return None
    return _check_int(x, name, 1)


# --------------------------------------------------------------------------------------
# one validator per public entry point
# --------------------------------------------------------------------------------------


def _iv_population(
    utilities: Any, weights: Any
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    u = _check_finite_array(utilities, "utilities", 2)
    t = u.shape[0]
    if weights is None:
        w = np.full(t, 1.0 / t)
    else:
        w = _check_finite_array(weights, "weights", 1)
        if w.shape[0] != t:
            raise ValueError(
                f"weights must have length {t} (one per user type, utilities.shape[0]), got {w.shape[0]}"
            )
        if np.any(w < 0):
            raise ValueError(
                f"weights must be non-negative, min entry is {w.min():.3g}"
            )
        total = float(w.sum())
        if abs(total - 1.0) > SIMPLEX_ATOL:
            raise ValueError(
                f"weights must sum to 1, sums to {total:.12g} (pass weights / weights.sum() for counts)"
            )
        w = w / total
    return u.copy(), w.copy()


def _iv_policy_k(
    pop: Any, policy: Any, k: Any
) -> tuple[Population, npt.NDArray[np.float64], int]:
    pop = _check_population(pop)
    pi = _check_simplex(policy, "policy", pop.n_responses)
    return pop, pi, _check_int(k, "k", 1)


def _iv_win_rate(
    pop: Any, policy: Any, k: Any, opponent: Any, m: Any
) -> tuple[Population, npt.NDArray[np.float64], int, npt.NDArray[np.float64], int]:
    pop, pi, k = _iv_policy_k(pop, policy, k)
    sigma = _check_simplex(opponent, "opponent", pop.n_responses)
    return pop, pi, k, sigma, _check_int(m, "m", 1)


def _iv_solver(
    pop: Any, k: Any, beta: Any, reference: Any, tol: Any, max_iter: Any
) -> tuple[Population, int, float, npt.NDArray[np.float64], float, int | None]:
    pop = _check_population(pop)
    k = _check_int(k, "k", 1)
    beta = _check_float(beta, "beta", minimum=0.0, strict=False)
    if reference is None:
        mu = np.full(pop.n_responses, 1.0 / pop.n_responses)
    else:
        mu = _check_simplex(reference, "reference", pop.n_responses)
    tol = _check_float(tol, "tol", minimum=0.0, strict=True)
    return pop, k, beta, mu, tol, _check_max_iter(max_iter)


def _iv_rewards_reference(
    rewards: Any, reference: Any
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    r = _check_finite_array(rewards, "rewards", 1)
    mu = _check_simplex(reference, "reference", r.shape[0])
    return r, mu


def _iv_self_play(
    pop: Any,
    k: Any,
    method: Any,
    eta: Any,
    n_steps: Any,
    init: Any,
    record_every: Any,
) -> tuple[Population, int, float, int, npt.NDArray[np.float64], int]:
    pop = _check_population(pop)
    k = _check_int(k, "k", 1)
    if method not in ("hedge", "optimistic"):
        raise ValueError(f"method must be 'hedge' or 'optimistic', got {method!r}")
    eta = _check_float(eta, "eta", minimum=0.0, strict=True)
    n_steps = _check_int(n_steps, "n_steps", 1)
    record_every = _check_int(record_every, "record_every", 1)
    n = pop.n_responses
    pi = np.full(n, 1.0 / n) if init is None else _check_simplex(init, "init", n)
    return pop, k, eta, n_steps, pi, record_every
