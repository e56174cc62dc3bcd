"""The candidate pipeline's glue between the database and the arrays.

Each public function does one step for one prompt and writes its rows in one transaction, so a
worker that dies loses at most the prompt in flight and a re-run continues where it stopped:

    generate_prompt_pool    prompt → merged Candidates of one generator   (workers.generation)
    build_population        prompt's candidates → PopulationMatrix U (T × N)   (workers.populations)
    fit_prompt_policies     population → one PolicyFit per (policy, k)      (workers.policies)
    build_prompt_items      fits → ComparisonItems with provenance counts   (theory.md §1);
                            an item whose draws are all one text is decided by construction
                            (needs_judgment False, credit k/(k+m)) and never shown to anyone
    build_attention_checks  pool → items with one deliberately broken text

The maths lives in `workers.policies` (pure NumPy); models live in `workers.generation` and
`workers.populations` (torch imported inside their functions). This module imports neither
torch nor transformers, so the web process may import it (for validation).
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from django.db import transaction

from studies.models import (
    Candidate,
    ComparisonItem,
    GeneratorModel,
    ItemCandidate,
    Policy,
    PolicyFit,
    PopulationMatrix,
    PreferenceSource,
    Prompt,
    Study,
)

# CTRL defaults (theory.md §5): β is chosen so that KL(π‖μ) hits this target, in nats.
CTRL_TARGET_KL = 0.5
# t of the best-of-N transform exp(t·u) is chosen from this grid to maximise the exact
# best-of-k vs best-of-k win rate against μ at the target KL ("transform bon with N = k").
CTRL_T_GRID = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
# LLMdoctor decoding weight of the doctor's log-probabilities (theory.md §6.3: β ≈ 0.5–0.8).
DOCTOR_BETA = 0.6

# Attention-check candidates use negative sample indices, which generation never produces.
ATTENTION_LABEL = "attention"
NONSENSE_LINES = (
    "Purple seventeen carburetor whispers the banana of Tuesday, sideways.",
    "Lorem gravel umbrella, seventeen marmalade onions conquer the staircase.",
    "The refrigerator sang eleven triangles while the moon filed its taxes.",
)


class PipelineError(Exception):
    """A problem the researcher can fix (bad configuration, missing inputs); shown on the job."""


# --------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True)
class GenerationTarget:
    """Candidates to sample for each prompt: `generator`'s rows, sampled by `patient` guided by
    `generator` when `guide_beta` is set (an LLMdoctor policy), else by `generator` itself."""

    generator: GeneratorModel
    patient: GeneratorModel | None = None
    guide_beta: float | None = None
    policy_name: str = ""


def generation_targets(study: Study) -> list[GenerationTarget]:
    """What a study needs generated: its pool, then each checkpoint's and doctor's own candidates."""
    targets = [GenerationTarget(study.generator)] if study.generator_id else []
    seen = {study.generator_id}
    for policy in study.policies.filter(kind__in=[Policy.Kind.CHECKPOINT, Policy.Kind.DOCTOR]).select_related("generator"):
        if policy.generator_id is None or policy.generator_id in seen:
            continue
        seen.add(policy.generator_id)
        if policy.kind == Policy.Kind.DOCTOR:
            beta = float((policy.params or {}).get("beta", DOCTOR_BETA))
            targets.append(GenerationTarget(policy.generator, study.generator, beta, policy.name))
        else:
            targets.append(GenerationTarget(policy.generator, policy_name=policy.name))
    return targets


def prompts_missing_candidates(study: Study, generator: GeneratorModel):
    return study.prompts.exclude(candidates__generator=generator).order_by("id")


def decoding_params(generator: GeneratorModel) -> dict:
    """Keyword arguments of `workers.generation.sample_pool` from the generator row."""
    allowed = {"max_new_tokens", "temperature", "top_p", "top_k", "system_prompt"}
    params = {k: v for k, v in (generator.decoding or {}).items() if k in allowed}
    params["batch_size"] = generator.batch_size
    params["seed"] = generator.seed
    return params


def _load(generator: GeneratorModel):
    from workers import generation

    return generation.load_model(
        generator.model_ref, revision=generator.revision or None, gguf_file=generator.gguf_file or None
    )


def generate_prompt_pool(prompt: Prompt, target: GenerationTarget, *, n: int) -> dict:
    """Sample, merge and save one prompt's pool for one target; returns the pool's record.

    Skips the sampling entirely when the pool is already saved (a re-run after a crash).
    """
    from workers import generation

    if Candidate.objects.filter(prompt=prompt, generator=target.generator).exists():
        return {"skipped": True, "tokens": 0, "seconds": 0.0}
    sampler = target.patient or target.generator
    params = {**decoding_params(sampler), "seed": target.generator.seed}
    handle = _load(sampler)
    guides = ((_load(target.generator), target.guide_beta),) if target.guide_beta is not None else ()
    started = time.perf_counter()
    samples = generation.sample_pool(handle, prompt.text, n=n, guides=guides, **params)
    seconds = time.perf_counter() - started
    merged = generation.merge_identical(samples)
    record = {
        **generation.generation_metadata(handle, guides=guides, **params),
        "pool_size": n,
        "policy": target.policy_name,
        "tokens": sum(s.token_count for s in samples),
        "seconds": round(seconds, 4),
        "distinct": len(merged),
    }
    by_index = {s.index: s for s in samples}
    extra = {
        cand.text: {
            "finish_reasons": [by_index[i].finish_reason for i in cand.indices],
            "token_counts": [by_index[i].token_count for i in cand.indices],
        }
        for cand in merged
    }
    written = save_prompt_pool(prompt, target.generator, merged, record, extra)
    return {**record, "skipped": written == 0}


def storable_text(text: str) -> str:
    """Model output as the database can hold it: PostgreSQL text can't contain NUL characters."""
    return text.replace("\x00", "\ufffd")


def save_prompt_pool(prompt: Prompt, generator: GeneratorModel, merged: list, metadata: dict,
                     per_text: dict | None = None) -> int:
    """Write one prompt's merged pool in one transaction; returns rows written (0 if present).

    `merged` items have `text`, `multiplicity`, `indices` and `token_count` (see
    `workers.generation.merge_identical`). The prompt row is locked so two deliveries of the
    same task can't both write; a pool already present is left exactly as it is.
    """
    per_text = per_text or {}
    groups: dict[str, list] = {}
    for cand in merged:
        groups.setdefault(storable_text(cand.text), []).append(cand)
    with transaction.atomic():
        Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
        if Candidate.objects.filter(prompt=prompt, generator=generator).exists():
            return 0
        rows = []
        for text, group in groups.items():
            group.sort(key=lambda c: min(c.indices))
            indices = sorted(int(i) for c in group for i in c.indices)
            extra: dict = {}
            for cand in group:
                for key, values in per_text.get(cand.text, {}).items():
                    extra.setdefault(key, []).extend(values)
            if text != group[0].text:
                extra["sanitised"] = "NUL characters replaced by U+FFFD"
            rows.append(
                Candidate(
                    prompt=prompt,
                    generator=generator,
                    sample_index=indices[0],
                    text=text,
                    text_sha256=Candidate.hash_text(text),
                    multiplicity=sum(int(c.multiplicity) for c in group),
                    token_count=int(group[0].token_count),
                    metadata={**metadata, **extra, "sample_indices": indices},
                )
            )
        Candidate.objects.bulk_create(rows)
        return len(rows)


# --------------------------------------------------------------------------------------------
# Populations


def population_candidates(prompt: Prompt) -> list[Candidate]:
    """A prompt's candidates in the population's column order (attention checks excluded)."""
    return list(
        Candidate.objects.filter(prompt=prompt, is_attention_check=False).order_by("generator_id", "sample_index")
    )


def utilities_to_bytes(u: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(u, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def utilities_from_bytes(data: bytes | memoryview) -> np.ndarray:
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)


def save_population(prompt: Prompt, candidates: list[Candidate], u: np.ndarray, weights: np.ndarray,
                    labels: list[str], metadata: dict) -> PopulationMatrix:
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (len(weights), len(candidates)):
        raise PipelineError(f"utilities have shape {u.shape}, expected ({len(weights)}, {len(candidates)})")
    if not np.all(np.isfinite(u)):
        raise PipelineError(f"the preference sources gave non-finite utilities for prompt {prompt.pk}")
    matrix, _ = PopulationMatrix.objects.update_or_create(
        prompt=prompt,
        defaults={
            "candidate_ids": [c.pk for c in candidates],
            "utilities": utilities_to_bytes(u),
            "weights": [float(w) for w in weights],
            "type_labels": list(labels),
            "metadata": metadata,
        },
    )
    return matrix


def build_population(prompt: Prompt, preference_sources: list[PreferenceSource]) -> PopulationMatrix:
    """Stack every source's types into the prompt's population (`workers.populations.combine_sources`).

    Source weights split the population's mass between sources; a source's own type weights
    split its share. Columns are `population_candidates(prompt)` (attention checks excluded).
    """
    from studies import sources
    from workers.populations import combine_sources

    candidates = population_candidates(prompt)
    if not candidates:
        raise PipelineError(f"prompt {prompt.pk} has no candidates")
    if not preference_sources:
        raise PipelineError("the study has no preference sources")
    parts = []
    for source in preference_sources:
        problems = sources.source_problems(source)
        if problems:
            raise PipelineError(f"preference source {source.pk} ({source.get_kind_display()}): " + " ".join(problems))
        try:
            parts.append(sources.source_utilities(source, prompt, candidates))
        except ValueError as exc:
            raise PipelineError(
                f"preference source {source.pk} ({source.get_kind_display()}), prompt {sources.prompt_key(prompt)}: {exc}"
            ) from exc
    names = [f"{s.kind}-{s.pk}" for s in preference_sources]
    u, weights, labels = combine_sources(parts, [s.weight for s in preference_sources], names=names)
    metadata = {"sources": [{"id": s.pk, "kind": s.kind, "weight": s.weight, "types": len(p.type_labels)}
                            for s, p in zip(preference_sources, parts, strict=True)]}
    return save_population(prompt, candidates, u, weights, list(labels), metadata)


@dataclass
class PromptPopulation:
    """A prompt's population as arrays, with the candidates in column order."""

    prompt: Prompt
    candidates: list[Candidate]
    pop: object  # workers.policies.Population

    @property
    def candidate_ids(self) -> list[int]:
        return [c.pk for c in self.candidates]

    def columns(self, generator_id: int | None) -> np.ndarray:
        return np.array([i for i, c in enumerate(self.candidates) if c.generator_id == generator_id], dtype=np.intp)

    def empirical(self, generator_id: int | None) -> np.ndarray:
        """The generator's sampling distribution over all columns (multiplicities; 0 elsewhere)."""
        mu = np.zeros(len(self.candidates))
        for i in self.columns(generator_id):
            mu[i] = self.candidates[i].multiplicity
        if mu.sum() == 0:
            raise PipelineError(f"prompt {self.prompt.pk} has no candidates from generator {generator_id}")
        return mu / mu.sum()


def load_population(prompt: Prompt) -> PromptPopulation:
    from workers.policies import Population

    try:
        matrix = prompt.population
    except PopulationMatrix.DoesNotExist:
        raise PipelineError(f"prompt {prompt.pk} has no population yet") from None
    by_id = {c.pk: c for c in Candidate.objects.filter(pk__in=matrix.candidate_ids)}
    missing = [pk for pk in matrix.candidate_ids if pk not in by_id]
    if missing:
        raise PipelineError(f"the population of prompt {prompt.pk} refers to deleted candidates {missing[:5]}")
    candidates = [by_id[pk] for pk in matrix.candidate_ids]
    pop = Population(utilities_from_bytes(matrix.utilities), np.asarray(matrix.weights, dtype=np.float64))
    return PromptPopulation(prompt=prompt, candidates=candidates, pop=pop)


# --------------------------------------------------------------------------------------------
# Fitting


POLICY_PARAMS = {
    Policy.Kind.SAMPLE: {},
    Policy.Kind.BEST_OF_N: {"n": "an integer ≥ 1 (default: the item's k)"},
    Policy.Kind.NLHF: {"beta": "a number ≥ 0 (default 0: the exact maximal lottery)"},
    Policy.Kind.MULTIPLAYER: {"beta": "a number ≥ 0 (default 0: the exact equilibrium)"},
    Policy.Kind.CTRL: {"target_kl": f"a number > 0 (default {CTRL_TARGET_KL})", "t": "a number > 0 (default: tuned for N = k)"},
    Policy.Kind.CHECKPOINT: {},
    Policy.Kind.DOCTOR: {"beta": f"a number > 0 (default {DOCTOR_BETA})"},
}


def policy_params_problems(policy: Policy) -> list[str]:
    """Readable problems with a policy's params for its kind; [] when valid."""
    allowed = POLICY_PARAMS.get(policy.kind)
    if allowed is None:
        return [f"Policy “{policy.name}”: unknown kind {policy.kind!r}."]
    params = policy.params or {}
    problems = []
    for key, value in params.items():
        if key not in allowed:
            known = ", ".join(f"{k} ({v})" for k, v in allowed.items()) or "none"
            problems.append(f"Policy “{policy.name}”: unknown param {key!r}; {policy.kind} takes {known}.")
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        strict = key in ("target_kl", "t") or (key == "beta" and policy.kind == Policy.Kind.DOCTOR)
        if key == "n":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = number and (value > 0 if strict else value >= 0)
        if not ok:
            problems.append(f"Policy “{policy.name}”: {key} must be {allowed[key]}.")
    return problems


@dataclass
class Fit:
    probabilities: np.ndarray  # (N,) over the population's columns
    certificate_kind: str
    certificate: float | None = None
    converged: bool = True
    stats: dict = field(default_factory=dict)


def _embed(values: np.ndarray, columns: np.ndarray, n: int) -> np.ndarray:
    full = np.zeros(n)
    full[columns] = values
    return full


def _solution_fit(solution, columns: np.ndarray, n: int, beta: float) -> Fit:
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


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _best_of_k_win_rate(rewards: np.ndarray, pi: np.ndarray, mu: np.ndarray, k: int) -> float:
    """P(best of k draws from π beats best of k from μ) under `rewards`, ties counting ½."""
    levels, inverse = np.unique(rewards, return_inverse=True)
    p_mass = np.bincount(inverse, weights=pi, minlength=len(levels))
    q_mass = np.bincount(inverse, weights=mu, minlength=len(levels))
    p_cdf, q_cdf = np.cumsum(p_mass) ** k, np.cumsum(q_mass) ** k
    p_pmf = np.diff(np.concatenate([[0.0], p_cdf]))
    q_pmf = np.diff(np.concatenate([[0.0], q_cdf]))
    q_below = np.concatenate([[0.0], q_cdf[:-1]])
    return float(np.sum(p_pmf * (q_below + 0.5 * q_pmf)))


def _ctrl_fit(rewards: np.ndarray, mu: np.ndarray, k: int, params: dict) -> tuple[np.ndarray, dict]:
    """CTRL with the best-of-N transform tuned for N = k (theory.md §5).

    β is set so that KL(π‖μ) = target_kl (param, default CTRL_TARGET_KL nats; capped at 95% of
    the largest reachable KL, −log μ(top-reward responses)). t is the param "t" if given,
    otherwise the value in CTRL_T_GRID whose policy wins best-of-k against best-of-k from μ
    most often under the mean-utility reward.
    """
    import workers.policies as wp

    support = mu > 0
    top = rewards[support].max()
    kl_max = -math.log(mu[support & (rewards == top)].sum())
    requested = float(params.get("target_kl", CTRL_TARGET_KL))
    target_kl = min(requested, 0.95 * kl_max)
    if target_kl <= 0:
        return mu.copy(), {"note": "the top reward holds all of μ's mass: π = μ", "target_kl": requested}
    grid = [float(params["t"])] if "t" in params else list(CTRL_T_GRID)
    best = None
    for t in grid:
        beta = wp.beta_for_kl(rewards, mu, target_kl, t=t, transform="bon")
        pi = np.asarray(wp.ctrl_policy(rewards, mu, t=t, beta=beta, transform="bon"))
        score = _best_of_k_win_rate(rewards, pi, mu, k)
        if best is None or score > best[0] + 1e-12:
            stats = {"t": t, "beta": beta, "kl": _kl(pi, mu), "target_kl": requested, "bo_k_win_rate_vs_mu": score}
            best = (score, pi, stats)
    return best[1], best[2]


def fit_policy(policy: Policy, pp: PromptPopulation, k: int, pool_generator_id: int, cache: dict) -> Fit:
    """One policy's distribution over the prompt's candidates for k shown samples.

    Pool-based kinds (sample, best_of_n, nlhf, ctrl, multiplayer) reweight the study
    generator's pool with reference μ = multiplicities; own-candidate kinds (checkpoint,
    doctor) are their own generator's empirical distribution. `cache` carries k-independent
    solutions (NLHF) between calls for the same prompt.
    """
    import workers.policies as wp

    n = len(pp.candidates)
    params = policy.params or {}
    if policy.kind in (Policy.Kind.CHECKPOINT, Policy.Kind.DOCTOR):
        if policy.generator_id is None:
            raise PipelineError(f"policy {policy.name}: a {policy.kind} policy needs its own generator")
        source = "guided decoding" if policy.kind == Policy.Kind.DOCTOR else "own candidates"
        return Fit(pp.empirical(policy.generator_id), PolicyFit.Certificate.NONE, stats={"source": source})

    columns = pp.columns(pool_generator_id)
    if len(columns) == 0:
        raise PipelineError(f"prompt {pp.prompt.pk} has no pool candidates")
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
    raise PipelineError(f"policy {policy.name}: unknown kind {policy.kind!r}")


def fit_prompt_policies(prompt: Prompt, policies: list[Policy], k_values: list[int]) -> int:
    """Fit every policy at every k on one prompt; replaces that prompt's fits in one transaction."""
    import workers.policies as wp

    study = prompt.study
    pp = load_population(prompt)
    cache: dict = {}
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


# --------------------------------------------------------------------------------------------
# Comparison items


def expected_credit(u: np.ndarray, weights: np.ndarray, shown: list[int], c_a: list[int], c_b: list[int]) -> float:
    """The population's expected credit for one shown set (theory.md §1).

    Each type t picks a shown text of maximal utility, splitting ties among the distinct shown
    texts uniformly; choosing text j credits the policy c_A(j) / (c_A(j) + c_B(j)):
    Σ_t w_t Σ_{j ∈ argmax_t} (1/|argmax_t|) · c_A(j)/(c_A(j)+c_B(j)).

    u: (T, N) utilities; shown: column indices of the distinct texts; c_a, c_b: counts per text.
    """
    sub = u[:, shown]
    credit = np.asarray(c_a, dtype=np.float64) / (np.asarray(c_a) + np.asarray(c_b))
    top = sub == sub.max(axis=1, keepdims=True)
    per_type = (top * credit).sum(axis=1) / top.sum(axis=1)
    return float(weights @ per_type)


@dataclass
class ItemDraft:
    key: dict
    fields: dict
    shown: list[tuple[int, int, int, int]]  # (candidate id, slot, c_A, c_B)

    @property
    def needs_judgment(self) -> bool:
        return self.fields.get("needs_judgment", True)


def needs_judgment(shown: list) -> bool:
    """Whether a shown set needs a person: with one distinct text every pick is that text, and
    its credit c_A/(c_A+c_B) = k/(k+m) is decided by construction (theory.md §1)."""
    return len(shown) > 1


def judged_count(drafts: list[ItemDraft]) -> int:
    """How many of `drafts` an annotator will be asked to judge (the base of the attention-check rate)."""
    return sum(1 for draft in drafts if draft.needs_judgment)


def _item_rng(study: Study, *parts: int) -> np.random.Generator:
    return np.random.default_rng([study.seed, *parts])


def _shown_rows(rng: np.random.Generator, pp: PromptPopulation, draws_a, draws_b):
    """Distinct texts of the k + m draws, in a shuffled slot order, with their counts."""
    count_a, count_b = Counter(int(i) for i in draws_a), Counter(int(i) for i in draws_b)
    distinct = sorted(set(count_a) | set(count_b))
    order = rng.permutation(len(distinct))
    shown = [distinct[i] for i in order]
    return shown, [count_a[j] for j in shown], [count_b[j] for j in shown]


def draft_prompt_items(prompt: Prompt, policies: list[Policy], pp: PromptPopulation | None = None) -> list[ItemDraft]:
    """Every (policy, k, opponent, replicate) item of one prompt, drawn reproducibly from Study.seed."""
    import workers.policies as wp

    study = prompt.study
    pp = pp or load_population(prompt)
    m = study.opponent_outputs
    fits = {
        (f.policy_id, f.k): np.asarray(f.probabilities, dtype=np.float64)
        for f in PolicyFit.objects.filter(prompt=prompt, policy__in=policies)
    }
    u, w = pp.pop.utilities, pp.pop.weights
    drafts = []
    for policy in policies:
        for k in study.k_values:
            if (policy.pk, k) not in fits:
                raise PipelineError(f"policy {policy.name} has no fit at k={k} for prompt {prompt.pk}")
            pi = fits[(policy.pk, k)]
            g = wp.pick_probability(pp.pop, pi, k)
            adversary = int(np.argmax(g))
            opponents = [(ComparisonItem.ADVERSARY, None, None)]
            for other in policies:
                if other.pk != policy.pk:
                    # The opponent shows m samples: its fit for m shown samples when the study
                    # fits that k, otherwise its fit at the item's k.
                    sigma = fits.get((other.pk, m), fits[(other.pk, k)])
                    opponents.append((other.name, other, sigma))
            for label, other, sigma in opponents:
                for replicate in range(study.replicates):
                    rng = _item_rng(study, prompt.pk, policy.pk, k, other.pk if other else 0, m, replicate)
                    draws_a = wp.sample_responses(pi, k, rng)
                    draws_b = [adversary] * m if other is None else wp.sample_responses(sigma, m, rng)
                    shown, c_a, c_b = _shown_rows(rng, pp, draws_a, draws_b)
                    key = {"prompt": prompt, "policy": policy, "k": k, "opponent_label": label, "m": m,
                           "replicate": replicate, "is_attention_check": False}
                    fields = {
                        "study": study,
                        "opponent_policy": other,
                        "predicted_win_rate": expected_credit(u, w, shown, c_a, c_b),
                        "needs_judgment": needs_judgment(shown),
                        "draw": {
                            "policy": [pp.candidates[int(i)].pk for i in draws_a],
                            "opponent": [pp.candidates[int(i)].pk for i in draws_b],
                        },
                    }
                    rows = [(pp.candidates[j].pk, slot, a, b) for slot, (j, a, b) in enumerate(zip(shown, c_a, c_b, strict=True))]
                    drafts.append(ItemDraft(key, fields, rows))
    return drafts


def garble(text: str, rng: np.random.Generator) -> str:
    """A deliberately broken version of a response: its words shuffled, or a nonsense line."""
    words = text.split()
    if len(set(words)) >= 4:
        for _ in range(10):
            shuffled = [words[i] for i in rng.permutation(len(words))]
            if shuffled != words:
                return " ".join(shuffled)
    return NONSENSE_LINES[int(rng.integers(len(NONSENSE_LINES)))]


def attention_check_count(study: Study, n_regular: int) -> int:
    """How many attention items make them `attention_check_rate` of the items annotators see.

    n_regular: the regular items that need judgment (`judged_count`); items decided by
    construction are never shown, so they don't call for checks.
    """
    rate = study.attention_check_rate
    if rate <= 0 or n_regular == 0:
        return 0
    if rate >= 1:
        return n_regular
    return max(1, round(rate / (1 - rate) * n_regular))


def draft_attention_items(prompt: Prompt, count: int, pp: PromptPopulation | None = None) -> list[ItemDraft]:
    """`count` attention items for one prompt: good pool texts plus one broken text each.

    The good texts count as the "policy" side (c_A = 1) and the broken one as the
    "opponent" (c_B = 1), so picking a good text gives credit 1 and the broken one 0.
    The broken text is saved as a Candidate (generator None, negative sample index).
    """
    study = prompt.study
    pp = pp or load_population(prompt)
    pool = pp.columns(study.generator_id)
    drafts = []
    for replicate in range(count):
        rng = _item_rng(study, prompt.pk, 0, 0, 0, 0, replicate, 1)
        n_good = min(max(study.k_values), len(pool))
        good = [int(j) for j in rng.choice(pool, size=n_good, replace=False)]
        source = pp.candidates[good[0]]
        broken_text = garble(source.text, rng)
        broken, _ = Candidate.objects.get_or_create(
            prompt=prompt,
            generator=None,
            sample_index=-(replicate + 1),
            defaults={
                "text": broken_text,
                "is_attention_check": True,
                "metadata": {"attention_check": True, "garbled_from": source.pk},
            },
        )
        ids = [pp.candidates[j].pk for j in good] + [broken.pk]
        counts = [(1, 0)] * len(good) + [(0, 1)]
        order = rng.permutation(len(ids))
        rows = [(ids[i], slot, *counts[i]) for slot, i in enumerate(order)]
        key = {"prompt": prompt, "policy": None, "k": len(good), "opponent_label": ATTENTION_LABEL, "m": 1,
               "replicate": replicate, "is_attention_check": True}
        drafts.append(ItemDraft(key, {"study": study, "opponent_policy": None, "predicted_win_rate": None,
                                      "needs_judgment": True, "draw": {"good": ids[:-1], "broken": broken.pk}}, rows))
    return drafts


@dataclass
class ItemCounts:
    created: int = 0
    unchanged: int = 0
    replaced: int = 0
    kept_assigned: int = 0
    removed: int = 0

    def add(self, other: ItemCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def save_prompt_items(prompt: Prompt, drafts: list[ItemDraft]) -> ItemCounts:
    """Make the prompt's items equal to `drafts`, in one transaction, touching nothing needlessly.

    A rebuild with the same inputs changes nothing (items are keyed by `item_unique` /
    `attention_item_unique`). An item that differs is replaced only if nobody was assigned it;
    items already shown to annotators are never altered or deleted. An item whose shown set is
    one text is saved with needs_judgment False (`needs_judgment`), so it is never assigned.
    """
    counts = ItemCounts()
    with transaction.atomic():
        existing = {
            _key_of(item): item
            for item in ComparisonItem.objects.filter(prompt=prompt).prefetch_related("shown")
        }
        assigned = set(
            ComparisonItem.objects.filter(prompt=prompt, assignments__isnull=False).values_list("pk", flat=True)
        )
        wanted = set()
        for draft in drafts:
            key = _key_of_draft(draft.key)
            wanted.add(key)
            item = existing.get(key)
            if item is not None:
                same = sorted((s.candidate_id, s.slot, s.count_policy, s.count_opponent) for s in item.shown.all()) == sorted(draft.shown)
                if same or item.pk in assigned:
                    if same and item.pk not in assigned:
                        _refresh_derived(item, draft)
                    counts.unchanged += same
                    counts.kept_assigned += not same
                    continue
                item.delete()
                counts.replaced += 1
            else:
                counts.created += 1
            item = ComparisonItem.objects.create(**draft.key, **draft.fields)
            ItemCandidate.objects.bulk_create(
                ItemCandidate(item=item, candidate_id=cid, slot=slot, count_policy=a, count_opponent=b)
                for cid, slot, a, b in draft.shown
            )
        for key, item in existing.items():
            if key not in wanted and item.pk not in assigned:
                item.delete()
                counts.removed += 1
    return counts


def _refresh_derived(item: ComparisonItem, draft: ItemDraft) -> None:
    """Update the fields derived from an unchanged shown set (the prediction, whether it needs
    judging) when they differ, e.g. after a new population or on items built before the field."""
    changed = []
    if not _close(item.predicted_win_rate, draft.fields["predicted_win_rate"]):
        item.predicted_win_rate = draft.fields["predicted_win_rate"]
        changed.append("predicted_win_rate")
    if item.needs_judgment != draft.needs_judgment:
        item.needs_judgment = draft.needs_judgment
        changed.append("needs_judgment")
    if changed:
        item.save(update_fields=changed)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-12


def _key_of(item: ComparisonItem) -> tuple:
    if item.is_attention_check:  # attention_item_unique: one per (prompt, replicate)
        return (ATTENTION_LABEL, item.replicate)
    return (item.policy_id, item.k, item.opponent_label, item.m, item.replicate)


def _key_of_draft(key: dict) -> tuple:
    if key["is_attention_check"]:
        return (ATTENTION_LABEL, key["replicate"])
    return (key["policy"].pk, key["k"], key["opponent_label"], key["m"], key["replicate"])
