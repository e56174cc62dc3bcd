"""The fit step: each policy of a study as a distribution over a prompt's candidates, per k.

Pool-based kinds (sample, best-of-N, NLHF, CTRL, the (k+1)-player equilibrium) reweight the
study generator's pool with reference μ = multiplicities; own-candidate kinds (checkpoint,
doctor) are their own generator's empirical distribution. Each fit carries the certificate
measured on it (exploitability or fixed-point residual) and its predicted robust win rate. The
maths is `workers.policies`; what each kind's params mean is `POLICY_PARAMS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from django.db import transaction

import workers.policies as wp
from studies.models import Policy, PolicyFit, Prompt, Study
from studies.steps import OnProgress, StepError, no_progress
from studies.steps.doctor_spec import PARAMS_HELP as DOCTOR_PARAMS
from studies.steps.doctor_spec import parse_doctor_params
from studies.steps.population import PromptPopulation, load_population
from workers.policies.ctrl import CTRL_TARGET_KL, fit_ctrl

POLICY_PARAMS: dict[str, dict[str, str]] = {
    Policy.Kind.SAMPLE: {},
    Policy.Kind.BEST_OF_N: {"n": "an integer ≥ 1 (default: the item's k)"},
    Policy.Kind.NLHF: {"beta": "a number ≥ 0 (default 0: the exact maximal lottery)"},
    Policy.Kind.MULTIPLAYER: {"beta": "a number ≥ 0 (default 0: the exact equilibrium)"},
    Policy.Kind.CTRL: {"target_kl": f"a number > 0 (default {CTRL_TARGET_KL})", "t": "a number > 0 (default: tuned for N = k)"},
    Policy.Kind.CHECKPOINT: {},
    Policy.Kind.DOCTOR: DOCTOR_PARAMS,
}


def policy_params_problems(policy: Policy) -> list[str]:
    """Readable problems with a policy's params for its kind; [] when valid."""
    allowed = POLICY_PARAMS.get(policy.kind)
    if allowed is None:
        return [f"Policy “{policy.name}”: unknown kind {policy.kind!r}."]
    params = policy.params or {}
    if policy.kind == Policy.Kind.DOCTOR:
        return [f"Policy “{policy.name}”: {p}" for p in parse_doctor_params(params)[1]]
    problems = []
    for key, value in params.items():
        if key not in allowed:
            known = ", ".join(f"{k} ({v})" for k, v in allowed.items()) or "none"
            problems.append(f"Policy “{policy.name}”: unknown param {key!r}; {policy.kind} takes {known}.")
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        strict = key in ("target_kl", "t")
        if key == "n":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = number and (value > 0 if strict else value >= 0)
        if not ok:
            problems.append(f"Policy “{policy.name}”: {key} must be {allowed[key]}.")
    return problems


@dataclass
class Fit:
    probabilities: npt.NDArray[np.float64]  # (N,) over the population's columns
    certificate_kind: str
    certificate: float | None = None
    converged: bool = True
    stats: dict[str, Any] = field(default_factory=dict)


def _embed(values: npt.ArrayLike, columns: npt.NDArray[np.intp], n: int) -> npt.NDArray[np.float64]:
    full = np.zeros(n)
    full[columns] = values
    return full


def _solution_fit(solution: wp.Solution, columns: npt.NDArray[np.intp], n: int, beta: float) -> Fit:
    kind = PolicyFit.Certificate.EXPLOITABILITY if beta == 0 else PolicyFit.Certificate.RESIDUAL
    value = solution.exploitability if beta == 0 else solution.residual
    return Fit(
        probabilities=_embed(np.asarray(solution.policy), columns, n),
        certificate_kind=kind,
        certificate=float(value),
        converged=bool(solution.converged),
        stats={
            "solver_exploitability": float(solution.exploitability),
            "residual": None if solution.residual is None else float(solution.residual),
            "n_iter": int(solution.n_iter),
            "beta": beta,
        },
    )


def _ctrl_fit(rewards: npt.NDArray[np.float64], mu: npt.NDArray[np.float64], k: int,
              params: dict[str, Any]) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """CTRL tuned for a best-of-k user (`workers.policies.ctrl.fit_ctrl`): π and how it was chosen."""
    t = float(params["t"]) if "t" in params else None
    fit = fit_ctrl(rewards, mu, k, target_kl=float(params.get("target_kl", CTRL_TARGET_KL)), t=t)
    stats: dict[str, Any] = {"transform": fit.transform, "t": fit.t, "beta": fit.beta, "kl": fit.kl,
                             "target_kl": fit.target_kl, "bo_k_win_rate_vs_mu": fit.score}
    if fit.note:
        stats["note"] = fit.note
    return fit.policy, stats


def fit_policy(policy: Policy, pp: PromptPopulation, k: int, pool_generator_id: int | None,
               cache: dict[tuple[str, int], Any]) -> Fit:
    """One policy's distribution over the prompt's candidates for k shown samples.

    Pool-based kinds (sample, best_of_n, nlhf, ctrl, multiplayer) reweight the study
    generator's pool with reference μ = multiplicities; own-candidate kinds (checkpoint,
    doctor) are their own generator's empirical distribution. `cache` carries k-independent
    solutions (NLHF) between calls for the same prompt.
    """
    n = len(pp.candidates)
    params = policy.params or {}
    if policy.kind in (Policy.Kind.CHECKPOINT, Policy.Kind.DOCTOR):
        if policy.generator_id is None:
            raise StepError(f"policy {policy.name}: a {policy.kind} policy needs its own generator")
        basis = "guided decoding" if policy.kind == Policy.Kind.DOCTOR else "own candidates"
        return Fit(pp.empirical(policy.generator_id), PolicyFit.Certificate.NONE, stats={"source": basis})

    columns = pp.columns(pool_generator_id)
    if len(columns) == 0:
        raise StepError(f"prompt {pp.prompt.pk} has no pool candidates")
    mu = pp.empirical(pool_generator_id)[columns]
    pool = pp.pop.subset(columns)
    rewards = pool.weights @ pool.utilities  # mean utility over the population's types

    if policy.kind == Policy.Kind.SAMPLE:
        return Fit(_embed(mu, columns, n), PolicyFit.Certificate.NONE, stats={"source": "reference"})
    if policy.kind == Policy.Kind.BEST_OF_N:
        best_n = int(params.get("n", k))
        pi = wp.best_of_n_policy(rewards, mu, best_n)
        return Fit(_embed(np.asarray(pi), columns, n), PolicyFit.Certificate.NONE, stats={"n": best_n})
    if policy.kind == Policy.Kind.CTRL:
        pi, stats = _ctrl_fit(rewards, mu, k, params)
        return Fit(_embed(pi, columns, n), PolicyFit.Certificate.NONE, stats=stats)
    beta = float(params.get("beta", 0.0))
    reference = mu if beta > 0 else None
    if policy.kind == Policy.Kind.NLHF:
        key = ("nlhf", policy.pk)
        if key not in cache:
            cache[key] = wp.solve_nlhf(pool, beta=beta, reference=reference)
        return _solution_fit(cache[key], columns, n, beta)
    if policy.kind == Policy.Kind.MULTIPLAYER:
        return _solution_fit(wp.solve_multiplayer(pool, k, beta=beta, reference=reference), columns, n, beta)
    raise StepError(f"policy {policy.name}: unknown kind {policy.kind!r}")


def fit_prompt_policies(prompt: Prompt, policies: list[Policy], k_values: list[int]) -> int:
    """Fit every policy at every k on one prompt; replaces that prompt's fits in one transaction."""
    study = prompt.study
    pp = load_population(prompt)
    cache: dict[tuple[str, int], Any] = {}
    fits = []
    for policy in policies:
        for k in k_values:
            fit = fit_policy(policy, pp, k, study.generator_id, cache)
            fits.append((policy, k, fit, wp.robust_win_rate(pp.pop, fit.probabilities, k)))
    with transaction.atomic():
        PolicyFit.objects.filter(prompt=prompt).exclude(k__in=k_values).delete()
        for policy, k, fit, robust in fits:
            PolicyFit.objects.update_or_create(
                policy=policy,
                prompt=prompt,
                k=k,
                defaults={
                    "candidate_ids": pp.candidate_ids,
                    "probabilities": [float(p) for p in fit.probabilities],
                    "certificate_kind": fit.certificate_kind,
                    "certificate": fit.certificate,
                    "converged": fit.converged,
                    "predicted_robust_win_rate": float(robust),
                    "solver_stats": fit.stats,
                },
            )
    return len(fits)


def fit_policies(study: Study, *, on_progress: OnProgress = no_progress) -> dict[str, Any]:
    """Fit every policy at every k of the study on every prompt; one prompt per transaction."""
    policies = list(study.policies.order_by("id"))
    prompts = list(study.prompts.order_by("id"))
    fits = 0
    for i, prompt in enumerate(prompts):
        on_progress(i, len(prompts), f"Fitting policies for prompt {i + 1} of {len(prompts)}")
        fits += fit_prompt_policies(prompt, policies, study.k_values)
    not_converged = study.policies.filter(fits__converged=False).values_list("name", flat=True).distinct()
    return {"fits": fits, "not_converged": sorted(not_converged)}
