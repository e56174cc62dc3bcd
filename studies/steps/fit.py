"""The fit step: each policy of a study as a distribution over a prompt's candidates, per k.

Pool-based kinds (sample, best-of-N, NLHF, CTRL, the (k+1)-player equilibrium) reweight the
study generator's pool with reference μ = multiplicities; own-candidate kinds (checkpoint,
doctor) are their own generator's empirical distribution. A share of each pool is held out of
fitting (`held_out_columns`, the study's `held_out_fraction`). Each fit carries the certificate
measured on it (exploitability or fixed-point residual) and its robust win rates against the
worst m-output opponent (m = the study's opponent outputs): over the fitted pool (the
certificate), over the held-out texts (the prediction for a fresh opponent) and over every
candidate (the adversary the items field; `predicted_robust_win_rate`). The maths is
`workers.policies`; what each kind's params mean is `POLICY_PARAMS`.
"""

from __future__ import annotations

import hashlib
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

#: Pools with fewer distinct texts than this hold nothing out: below 8, the default ¼ holds out
#: one text (a "fresh opponent" of one) and removes the population's best text from the fit
#: one time in N (docs/theory.md, "Held-out responses").
MIN_POOL_FOR_HELD_OUT = 8
#: Seed stream of the held-out split (items draw from other streams of the same study seed).
HELD_OUT_STREAM = 11

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


@dataclass(frozen=True)
class PoolColumns:
    """A prompt's pool (the study generator's candidates) as population columns, split for fitting.

    `fitted` are the columns the population-based policies are fitted on; `held_out` the ones
    kept out (`held_out_columns`), on which the fits' predictions for a fresh opponent are measured.
    """

    generator_id: int | None
    pool: npt.NDArray[np.intp]
    fitted: npt.NDArray[np.intp]
    held_out: npt.NDArray[np.intp]


def content_seed(text: str) -> list[int]:
    """Eight 32-bit words of the SHA-256 of a text: a seed that is the same wherever the text is."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]


def held_out_columns(study: Study, pp: PromptPopulation) -> PoolColumns:
    """Split the prompt's pool into fitted and held-out columns, reproducibly from the study's
    seed and the prompt's text, never from database ids.

    The rule: a pool of fewer than MIN_POOL_FOR_HELD_OUT distinct texts, or a study whose
    `held_out_fraction` is 0, holds nothing out; otherwise `workers.policies.split_pool` holds out
    round(fraction × N) texts (at least one, never all), drawn from
    `[study.seed, HELD_OUT_STREAM, *content_seed(prompt text)]` over the pool's texts in the order
    of their SHA-256. So a copy of a study (`services.copy_study_as_draft`), or the same study
    set up twice, holds out the same texts of each prompt whatever ids its rows got (issue #21).
    """
    columns = pp.columns(study.generator_id)
    if len(columns) < MIN_POOL_FOR_HELD_OUT or study.held_out_fraction <= 0:
        return PoolColumns(study.generator_id, columns, columns, columns[:0])
    by_text = columns[np.argsort([pp.candidates[int(i)].text_sha256 for i in columns], kind="stable")]
    rng = np.random.default_rng([study.seed, HELD_OUT_STREAM, *content_seed(pp.prompt.text)])
    split = wp.split_pool(len(by_text), rng, fraction=study.held_out_fraction)
    return PoolColumns(study.generator_id, columns, np.sort(by_text[split.fitted]), np.sort(by_text[split.held_out]))


def _reference(pp: PromptPopulation, columns: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    """μ on `columns`: the candidates' multiplicities, normalised."""
    mult = np.array([pp.candidates[int(i)].multiplicity for i in columns], dtype=np.float64)
    return mult / mult.sum()


def fit_policy(policy: Policy, pp: PromptPopulation, k: int, pool: PoolColumns,
               cache: dict[tuple[str, int], Any]) -> Fit:
    """One policy's distribution over the prompt's candidates for k shown samples.

    Pool-based kinds reweight the study generator's pool with reference μ = multiplicities:
    plain sampling is μ on the whole pool (it uses no utilities); best-of-N, NLHF, CTRL and the
    multiplayer equilibrium are fitted on `pool.fitted` only, so they put no mass on held-out
    texts. CTRL and best-of-N score a text with `workers.policies.quantile_rewards` (the
    type-weighted mean of its per-type quantile under μ: no monotone rescaling of a type moves
    it). Own-candidate kinds (checkpoint, doctor) are their own generator's empirical
    distribution. `cache` carries k-independent solutions (NLHF) between calls for one prompt.
    """
    n = len(pp.candidates)
    params = policy.params or {}
    if policy.kind in (Policy.Kind.CHECKPOINT, Policy.Kind.DOCTOR):
        if policy.generator_id is None:
            raise StepError(f"policy {policy.name}: a {policy.kind} policy needs its own generator")
        basis = "guided decoding" if policy.kind == Policy.Kind.DOCTOR else "own candidates"
        return Fit(pp.empirical(policy.generator_id), PolicyFit.Certificate.NONE, stats={"source": basis})
    if len(pool.pool) == 0:
        raise StepError(f"prompt {pp.prompt.pk} has no pool candidates")
    if policy.kind == Policy.Kind.SAMPLE:
        return Fit(pp.empirical(pool.generator_id), PolicyFit.Certificate.NONE, stats={"source": "reference"})

    columns = pool.fitted
    mu = _reference(pp, columns)
    fitted = pp.pop.subset(columns)
    if policy.kind in (Policy.Kind.BEST_OF_N, Policy.Kind.CTRL):
        rewards = wp.quantile_rewards(fitted, mu)
        if policy.kind == Policy.Kind.BEST_OF_N:
            best_n = int(params.get("n", k))
            pi = np.asarray(wp.best_of_n_policy(rewards, mu, best_n))
            return Fit(_embed(pi, columns, n), PolicyFit.Certificate.NONE, stats={"n": best_n, "reward": "quantile"})
        pi, stats = _ctrl_fit(rewards, mu, k, params)
        return Fit(_embed(pi, columns, n), PolicyFit.Certificate.NONE, stats={**stats, "reward": "quantile"})
    beta = float(params.get("beta", 0.0))
    reference = mu if beta > 0 else None
    if policy.kind == Policy.Kind.NLHF:
        key = ("nlhf", policy.pk)
        if key not in cache:
            cache[key] = wp.solve_nlhf(fitted, beta=beta, reference=reference)
        return _solution_fit(cache[key], columns, n, beta)
    if policy.kind == Policy.Kind.MULTIPLAYER:
        return _solution_fit(wp.solve_multiplayer(fitted, k, beta=beta, reference=reference), columns, n, beta)
    raise StepError(f"policy {policy.name}: unknown kind {policy.kind!r}")


@dataclass(frozen=True)
class Predictions:
    """A fit's robust win rates against the worst m-output opponent (theory.md §2), by where
    the opponent's responses come from."""

    overall: float  # any candidate of the prompt: the adversary the items field
    pool: float  # the fitted pool: the certificate
    held_out: float | None  # the held-out texts: the prediction for a fresh opponent (None: none held out)
    adversary: tuple[int, ...]  # the overall adversary's columns
    exact: bool
    gap: float  # how much better an opponent the search may have missed (0 when exact)


def predictions(pp: PromptPopulation, pi: npt.NDArray[np.float64], k: int, m: int, pool: PoolColumns) -> Predictions:
    """`workers.policies.find_adversary` over every candidate, the fitted pool and the held-out texts.

    This is `workers.policies.held_out_certificate`'s triple on the prompt's columns, which may
    also hold other generators' candidates (a checkpoint's) that a policy can put mass on.
    """
    overall = wp.find_adversary(pp.pop, pi, k, m)
    on_pool = wp.find_adversary(pp.pop, pi, k, m, candidates=pool.fitted)
    on_held = wp.find_adversary(pp.pop, pi, k, m, candidates=pool.held_out) if len(pool.held_out) else None
    # a search (not an enumeration) over everything may miss what a restricted one found
    found = [adv for adv in (overall, on_pool, on_held) if adv is not None]
    worst = min(found, key=lambda adv: adv.win_rate)
    return Predictions(
        overall=worst.win_rate, pool=on_pool.win_rate, held_out=None if on_held is None else on_held.win_rate,
        adversary=worst.responses, exact=all(adv.exact for adv in found), gap=max(adv.gap for adv in found),
    )


def fit_prompt_policies(prompt: Prompt, policies: list[Policy], k_values: list[int]) -> int:
    """Fit every policy at every k on one prompt; replaces that prompt's fits in one transaction."""
    study = prompt.study
    pp = load_population(prompt)
    pool = held_out_columns(study, pp)
    m = study.opponent_outputs
    cache: dict[tuple[str, int], Any] = {}
    fits = []
    for policy in policies:
        for k in k_values:
            fit = fit_policy(policy, pp, k, pool, cache)
            fits.append((policy, k, fit, predictions(pp, fit.probabilities, k, m, pool)))
    held_out_ids = [pp.candidates[int(i)].pk for i in pool.held_out]
    with transaction.atomic():
        PolicyFit.objects.filter(prompt=prompt).exclude(k__in=k_values).delete()
        for policy, k, fit, predicted in fits:
            stats = {**fit.stats, "m": m, "held_out_candidates": held_out_ids,
                     "adversary": [pp.candidates[i].pk for i in predicted.adversary],
                     "adversary_exact": predicted.exact, "adversary_gap": predicted.gap}
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
                    "predicted_robust_win_rate": predicted.overall,
                    "pool_robust_win_rate": predicted.pool,
                    "held_out_robust_win_rate": predicted.held_out,
                    "solver_stats": stats,
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
