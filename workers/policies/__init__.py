"""Pure-NumPy maths of ualign (theory.md section 8): exact win rates and certified solvers.

No Django import anywhere in this package.
"""

from __future__ import annotations

from .ctrl import best_of_n_policy, beta_for_kl, calibrate, ctrl_policy, kl_divergence
from .equilibrium import Solution, solve_multiplayer, solve_nlhf
from .population import (
    Population,
    exploitability,
    pick_probability,
    robust_win_rate,
    robust_win_rate_m,
    sample_responses,
    win_rate,
)
from .self_play import SelfPlayTrajectory, self_play

__all__ = [
    "Population",
    "SelfPlayTrajectory",
    "Solution",
    "best_of_n_policy",
    "beta_for_kl",
    "calibrate",
    "ctrl_policy",
    "exploitability",
    "kl_divergence",
    "pick_probability",
    "robust_win_rate",
    "robust_win_rate_m",
    "sample_responses",
    "self_play",
    "solve_multiplayer",
    "solve_nlhf",
    "win_rate",
]
