"""Pure-NumPy maths of ualign (theory.md section 8): exact win rates and certified solvers.

No Django import anywhere in this package.
"""

from __future__ import annotations

from .choice import (
    Adversary,
    MOutputBound,
    adversary,
    choice_probabilities,
    choose,
    expected_credit,
    find_adversary,
    m_output_bound,
    multiset_win_rate,
)
from .ctrl import (
    CtrlFit,
    best_of_k_win_rate,
    best_of_n_policy,
    beta_for_kl,
    calibrate,
    ctrl_policy,
    fit_ctrl,
    kl_divergence,
    quantile_rewards,
)
from .equilibrium import Solution, solve_multiplayer, solve_nlhf
from .heldout import HeldOutCertificate, PoolSplit, held_out_certificate, split_pool
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
    "Adversary",
    "CtrlFit",
    "HeldOutCertificate",
    "MOutputBound",
    "PoolSplit",
    "Population",
    "SelfPlayTrajectory",
    "Solution",
    "best_of_k_win_rate",
    "best_of_n_policy",
    "beta_for_kl",
    "adversary",
    "calibrate",
    "choice_probabilities",
    "choose",
    "ctrl_policy",
    "expected_credit",
    "exploitability",
    "find_adversary",
    "fit_ctrl",
    "held_out_certificate",
    "kl_divergence",
    "m_output_bound",
    "multiset_win_rate",
    "pick_probability",
    "quantile_rewards",
    "robust_win_rate",
    "robust_win_rate_m",
    "sample_responses",
    "self_play",
    "solve_multiplayer",
    "solve_nlhf",
    "split_pool",
    "win_rate",
]
