"""The pool step: sample each prompt's candidates with a generator, merge identical texts, save.

A study without a generator uses candidates imported for every prompt instead
(`studies.candidate_import`): it samples nothing for its pool (checkpoint and doctor policies
still generate their own), and the later steps run on the imported pool as on a generated one.

Each (prompt, index) has its own seed (`workers.generation.sample_seed`), so a re-run
reproduces the texts; one prompt's pool is written in one transaction and a pool already saved
is never sampled again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from studies.models import Candidate, GeneratorModel, Policy, Prompt, Study
from studies.steps import OnProgress, no_progress
from workers import generation

# LLMdoctor decoding weight of the doctor's log-probabilities (theory.md §6.3: β ≈ 0.5–0.8).
DOCTOR_BETA = 0.6


@dataclass(frozen=True)
class GenerationTarget:
    """Candidates to sample for each prompt: `generator`'s rows, sampled by `patient` guided by
    `generator` when `guide_beta` is set (an LLMdoctor policy), else by `generator` itself."""

    generator: GeneratorModel
    patient: GeneratorModel | None = None
    guide_beta: float | None = None
    policy_name: str = ""

    @property
    def sampler(self) -> GeneratorModel:
        """The model whose decoding draws the samples."""
        return self.patient or self.generator


def generation_targets(study: Study) -> list[GenerationTarget]:
    """What a study needs generated: its pool, then each checkpoint's and doctor's own candidates."""
    targets = [GenerationTarget(study.generator)] if study.generator is not None else []
    seen = {study.generator_id}
    for policy in study.policies.filter(kind__in=[Policy.Kind.CHECKPOINT, Policy.Kind.DOCTOR]).select_related("generator"):
        if policy.generator is None or policy.generator_id in seen:
            continue
        seen.add(policy.generator_id)
        if policy.kind == Policy.Kind.DOCTOR:
            beta = float((policy.params or {}).get("beta", DOCTOR_BETA))
            targets.append(GenerationTarget(policy.generator, study.generator, beta, policy.name))
        else:
            targets.append(GenerationTarget(policy.generator, policy_name=policy.name))
    return targets


def decoding_params(generator: GeneratorModel) -> dict[str, Any]:
    """Keyword arguments of `workers.generation.sample_pool` from the generator row."""
    allowed = {"max_new_tokens", "temperature", "top_p", "top_k", "system_prompt"}
    params = {k: v for k, v in (generator.decoding or {}).items() if k in allowed}
    params["batch_size"] = generator.batch_size
    params["seed"] = generator.seed
    return params


def _load(generator: GeneratorModel) -> generation.ModelHandle:
    return generation.load_model(
        generator.model_ref, revision=generator.revision or None, gguf_file=generator.gguf_file or None
    )


def generate_prompt_pool(prompt: Prompt, target: GenerationTarget, *, n: int) -> dict[str, Any]:
    """Sample, merge and save one prompt's pool for one target; returns the pool's record.

    Skips the sampling entirely when the pool is already saved (a re-run after a crash).
    """
    if Candidate.objects.filter(prompt=prompt, generator=target.generator).exists():
        return {"skipped": True, "tokens": 0, "seconds": 0.0}
    params = {**decoding_params(target.sampler), "seed": target.generator.seed}
    handle = _load(target.sampler)
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
    extra: dict[str, dict[str, list[Any]]] = {
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


def _candidate_row(prompt: Prompt, generator: GeneratorModel, text: str, group: list[Any], metadata: dict,
                   per_text: dict[str, dict[str, list]]) -> Candidate:
    """One Candidate from the merged texts that store as `text` (several only when NULs differed)."""
    group.sort(key=lambda c: min(c.indices))
    indices = sorted(int(i) for c in group for i in c.indices)
    extra: dict[str, Any] = {}
    for cand in group:
        for key, values in per_text.get(cand.text, {}).items():
            extra.setdefault(key, []).extend(values)
    if text != group[0].text:
        extra["sanitised"] = "NUL characters replaced by U+FFFD"
    return Candidate(
        prompt=prompt,
        generator=generator,
        sample_index=indices[0],
        text=text,
        text_sha256=Candidate.hash_text(text),
        multiplicity=sum(int(c.multiplicity) for c in group),
        token_count=int(group[0].token_count),
        metadata={**metadata, **extra, "sample_indices": indices},
    )


def save_prompt_pool(prompt: Prompt, generator: GeneratorModel, merged: Sequence[Any], metadata: dict,
                     per_text: dict[str, dict[str, list]] | None = None) -> int:
    """Write one prompt's merged pool in one transaction; returns rows written (0 if present).

    `merged` items have `text`, `multiplicity`, `indices` and `token_count` (see
    `workers.generation.merge_identical`). The prompt row is locked so two deliveries of the
    same task can't both write; a pool already present is left exactly as it is.
    """
    groups: dict[str, list[Any]] = {}
    for cand in merged:
        groups.setdefault(storable_text(cand.text), []).append(cand)
    with transaction.atomic():
        Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
        if Candidate.objects.filter(prompt=prompt, generator=generator).exists():
            return 0
        rows = [_candidate_row(prompt, generator, text, group, metadata, per_text or {}) for text, group in groups.items()]
        Candidate.objects.bulk_create(rows)
        return len(rows)


_NOT_RECORDED = ("tokens", "seconds", "distinct", "skipped")


def generate_pools(study: Study, *, on_progress: OnProgress = no_progress) -> dict[str, Any]:
    """Sample every prompt's pool (and checkpoint/doctor candidates); one prompt per transaction.

    Returns the step's record: pools generated and skipped, tokens, throughput, and per
    generator what the run depends on (`workers.generation.generation_metadata`).
    """
    targets = generation_targets(study)
    prompts = list(study.prompts.order_by("id"))
    total, done, generated, skipped, tokens, seconds = len(targets) * len(prompts), 0, 0, 0, 0, 0.0
    record: dict[str, dict[str, Any]] = {}
    for target in targets:
        for i, prompt in enumerate(prompts):
            on_progress(done, total, f"Generating with {target.generator.name}: prompt {i + 1} of {len(prompts)}")
            pool = generate_prompt_pool(prompt, target, n=study.pool_size)
            done += 1
            if pool["skipped"]:
                skipped += 1
                continue
            generated += 1
            tokens += pool["tokens"]
            seconds += pool["seconds"]
            record.setdefault(target.generator.name, {k: v for k, v in pool.items() if k not in _NOT_RECORDED})
    imported = 0
    if study.generator_id is None:  # brought-in candidates are the pool (studies/candidate_import.py)
        imported = Candidate.objects.filter(prompt__study=study, generator__isnull=True, is_attention_check=False) \
            .values("prompt").distinct().count()
        on_progress(total, total, f"Using the imported candidates of {imported} prompts")
    return {
        "pools_generated": generated,
        "pools_skipped": skipped,
        "pools_imported": imported,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 2) if seconds else None,
        "generation": record,
    }
