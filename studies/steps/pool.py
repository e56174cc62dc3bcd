"""The pool step: sample each prompt's candidates with a generator, merge identical texts, save.

A study without a generator uses candidates imported for every prompt instead
(`studies.candidate_import`): it samples nothing for its pool (checkpoint and doctor policies
still generate their own), and the later steps run on the imported pool as on a generated one.
A doctor policy's candidates are sampled by the study's generator (the patient) guided by the
policy's trained doctors (`workers.doctor.guided`'s formula, on `workers.generation.sample_pool`),
and saved under the policy's own generator row.

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
from studies.steps import OnProgress, StepError, no_progress
from studies.steps.doctor_spec import doctor_guides
from workers import generation


@dataclass(frozen=True)
class GenerationTarget:
    """Candidates to sample for each prompt, saved under `generator` with its decoding and seed.

    `model` is the model that samples when it is not `generator` itself: for an LLMdoctor policy
    the study's generator (the patient), guided by the policy's trained doctors
    (`studies.steps.doctor_spec.doctor_guides`).
    """

    generator: GeneratorModel
    model: GeneratorModel | None = None
    doctor_policy: Policy | None = None
    policy_name: str = ""

    @property
    def sampler(self) -> GeneratorModel:
        """The model whose decoding draws the samples."""
        return self.model or self.generator


def generation_targets(study: Study) -> list[GenerationTarget]:
    """What a study needs generated: its pool, then each checkpoint's and doctor's own candidates.

    A doctor policy without a generator row yet (Prepare makes one) has no target.
    """
    targets = [GenerationTarget(study.generator)] if study.generator is not None else []
    seen = {study.generator_id}
    policies = study.policies.filter(kind__in=[Policy.Kind.CHECKPOINT, Policy.Kind.DOCTOR]).select_related("generator")
    for policy in policies.order_by("id"):
        if policy.generator is None or policy.generator_id in seen:
            continue
        seen.add(policy.generator_id)
        if policy.kind == Policy.Kind.DOCTOR:
            targets.append(GenerationTarget(policy.generator, study.generator, policy, policy.name))
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


def generators_record(study: Study) -> list[dict[str, Any]]:
    """What each generator of the study depends on, recorded on the chain's parent job when
    Prepare launches (house style C.9): its name, whether doctors guide it, its revision and
    file, and `workers.generation.generation_metadata` of its model ref and decoding (no model
    is loaded). Here, beside the targets and decoding it describes, so that the workflows that
    launch the chain reach the generation library only through this step."""
    return [
        {
            "name": t.generator.name,
            "guided": t.doctor_policy is not None,
            **generation.generation_metadata(t.sampler.model_ref, **decoding_params(t.generator)),
            "revision": t.sampler.revision,
            "gguf_file": t.sampler.gguf_file,
        }
        for t in generation_targets(study)
    ]


def load_generator(generator: GeneratorModel) -> generation.ModelHandle:
    """The generator row's model, loaded once per process (`workers.generation.load_model`)."""
    return generation.load_model(
        generator.model_ref, revision=generator.revision or None, gguf_file=generator.gguf_file or None
    )


@dataclass(frozen=True)
class Guidance:
    """A doctor policy's decoding weights: α for the patient, (trained doctor folder, β) per doctor."""

    alpha: float
    guides: tuple[tuple[str, float], ...]

    def matches(self, metadata: dict[str, Any]) -> bool:
        """Whether candidates with this generation record were sampled with these doctors and weights."""
        recorded = [(g.get("ref"), g.get("beta")) for g in metadata.get("guides", [])]
        return metadata.get("alpha") == self.alpha and recorded == [(p, float(b)) for p, b in self.guides]


def _check_saved_pool(prompt: Prompt, target: GenerationTarget, guidance: Guidance | None) -> bool:
    """True when the target's candidates of `prompt` are saved; a doctor policy's must come from
    its current doctors and weights (they are never sampled again, so a change must be seen)."""
    saved = Candidate.objects.filter(prompt=prompt, generator=target.generator).order_by("sample_index").first()
    if saved is None:
        return False
    if guidance is not None and not guidance.matches(saved.metadata):
        raise StepError(
            f"policy {target.policy_name}: its candidates for prompt {prompt.pk} were sampled with other doctors "
            "or weights; add a new doctor policy to sample with the new ones"
        )
    return True


def generate_prompt_pool(prompt: Prompt, target: GenerationTarget, *, n: int,
                         guidance: Guidance | None = None) -> dict[str, Any]:
    """Sample, merge and save one prompt's pool for one target; returns the pool's record.

    Skips the sampling entirely when the pool is already saved (a re-run after a crash).
    `guidance` is a doctor policy's (`doctor_spec.doctor_guides`); the doctors are loaded by
    folder and must share the patient's tokenizer (they are trained on it).
    """
    if _check_saved_pool(prompt, target, guidance):
        return {"skipped": True, "tokens": 0, "seconds": 0.0}
    params = decoding_params(target.generator)
    handle = load_generator(target.sampler)
    guides = tuple((generation.load_model(path), beta) for path, beta in guidance.guides) if guidance else ()
    alpha = guidance.alpha if guidance else 1.0
    started = time.perf_counter()
    samples = generation.sample_pool(handle, prompt.text, n=n, guides=guides, alpha=alpha, **params)
    seconds = time.perf_counter() - started
    merged = generation.merge_identical(samples)
    record = {
        **generation.generation_metadata(handle, guides=guides, alpha=alpha, **params),
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


def generate_pools(study: Study, *, doctors: bool = True, on_progress: OnProgress = no_progress) -> dict[str, Any]:
    """Sample every prompt's pool (and checkpoint/doctor candidates); one prompt per transaction.

    With `doctors` False the doctor policies' candidates are left for later: the Prepare chain of
    a study with doctor policies generates the pool, builds its population, trains the doctors
    (`studies.steps.doctor`) and then calls this again for the guided candidates.

    Returns the step's record: pools generated and skipped, tokens, throughput, and per
    generator what the run depends on (`workers.generation.generation_metadata`).
    """
    targets = [t for t in generation_targets(study) if doctors or t.doctor_policy is None]
    guidance = {}
    for target in targets:
        if target.doctor_policy is not None:
            alpha, guides = doctor_guides(target.doctor_policy)
            guidance[target.generator.pk] = Guidance(alpha, tuple(guides))
    prompts = list(study.prompts.order_by("id"))
    total, done, generated, skipped, tokens, seconds = len(targets) * len(prompts), 0, 0, 0, 0, 0.0
    record: dict[str, dict[str, Any]] = {}
    for target in targets:
        for i, prompt in enumerate(prompts):
            on_progress(done, total, f"Generating with {target.generator.name}: prompt {i + 1} of {len(prompts)}")
            pool = generate_prompt_pool(prompt, target, n=study.pool_size, guidance=guidance.get(target.generator.pk))
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
