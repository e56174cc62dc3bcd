"""TFPO's losses, on tensors (workers.doctor.tfpo's module docstring has the equations).

Pure functions of aligned (B, L) or (B, T) tensors, so a test can check each against a hand
computation; torch is imported inside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "hinge_positions",
    "subtrajectory_balance_loss",
    "token_value_hinge_loss",
    "value_hinge_loss",
]


def _torch() -> Any:
    import torch  # in-function import: keeps torch out of the web process

    return torch


def subtrajectory_balance_loss(
    token_logp: Any,
    rewards: Any,
    reference: Any,
    values: Any,
    response_mask: Any,
    *,
    reward_scale: float = 1.0,
) -> Any:
    """Per-sequence SubTB loss over all prefix pairs m < n (module docstring), shape (B,).

    All inputs are (B, L) tensors aligned on positions of a left-padded batch: ``token_logp``
    holds log π_doctor of the token *at* each position, ``rewards`` r_t and ``reference`` the
    patient's log-probability there (0 outside the response), ``values`` V_φ of the prefix
    ending at each position, and ``response_mask`` 1 on response tokens. Every row needs at
    least one response token, and position 0 must not be a response token (the prompt is
    non-empty).
    """
    torch = _torch()
    mask = response_mask.to(torch.float64)
    v = values.to(torch.float64)
    v_prev = torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], dim=1)
    d = (
        token_logp.double()
        - reward_scale * rewards.double()
        - reference.double()
        - (v - v_prev)
    ) * mask
    cumulative = d.cumsum(dim=1)
    # States s_0..s_T: the last prompt position and every response position.
    states = torch.maximum(mask, torch.roll(mask, -1, dims=1) * (1 - mask))
    k = states.sum(dim=1)
    mean = (cumulative * states).sum(dim=1) / k
    spread = (((cumulative - mean[:, None]) ** 2) * states).sum(dim=1)
    return (k * spread / (k * (k - 1) / 2)).to(values.dtype)


def value_hinge_loss(value_chosen: Any, value_rejected: Any, *, gamma: float) -> Any:
    """``max(0, γ − (V(x, y_w) − V(x, y_l)))`` per pair."""
    torch = _torch()
    return torch.clamp(gamma - (value_chosen - value_rejected), min=0.0)


def token_value_hinge_loss(
    values_chosen: Any, values_rejected: Any, counted: Any, *, gamma: float
) -> Any:
    """The per-token value hinge of each pair (module docstring), shape (B,).

    ``values_chosen[i, t]`` and ``values_rejected[i, t]`` are V_φ of the states after the
    (t+1)-th response token of pair i's chosen and rejected response, aligned by token
    position (B, T); ``counted`` is 1 on the positions in P (after the shared leading tokens,
    within both responses) and 0 elsewhere. A pair with no counted position gives 0.
    """
    torch = _torch()
    hinge = torch.clamp(gamma - (values_chosen - values_rejected), min=0.0)
    counted = counted.to(hinge.dtype)
    return (hinge * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1.0)


def hinge_positions(chosen: Sequence[int], rejected: Sequence[int]) -> tuple[int, int]:
    """``(k, stop)``: the 0-based response positions k..stop−1 the token hinge counts.

    k is the number of leading tokens the two responses share (their states are identical
    there), stop = min(len(chosen), len(rejected)); k == stop means none.
    """
    stop = min(len(chosen), len(rejected))
    k = 0
    while k < stop and chosen[k] == rejected[k]:
        k += 1
    return k, stop
