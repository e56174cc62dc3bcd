"""The population step: a prompt's candidates → its population, utilities U (T types × N candidates).

Each `PreferenceSource` of a study gives user types to every prompt's population; its `weight`
is its share of the population, split among its types by their own weights (default equal).
What each kind of source takes, how it is checked and run: `studies.steps.preference_sources`.
The population is stored as a `PopulationMatrix` (U as .npy bytes, columns = candidate ids)
and loaded back as a `PromptPopulation` (a `workers.policies.Population` with its candidates).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from studies.models import Candidate, PopulationMatrix, PreferenceSource, Prompt, Study
from studies.steps import OnProgress, StepError, no_progress
from studies.steps.preference_sources import (
    prompt_key,
    source_problems,
    source_utilities,
)
from workers import populations
from workers.policies import Population

# --------------------------------------------------------------------------------------------
# The population of a prompt, stored and loaded


def population_candidates(prompt: Prompt) -> list[Candidate]:
    """A prompt's candidates in the population's column order (attention checks excluded)."""
    return list(
        Candidate.objects.filter(prompt=prompt, is_attention_check=False).order_by("generator_id", "sample_index")
    )


def utilities_to_bytes(u: npt.ArrayLike) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(u, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def utilities_from_bytes(data: bytes | memoryview) -> npt.NDArray[np.float64]:
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)


def save_population(prompt: Prompt, candidates: list[Candidate], u: npt.ArrayLike, weights: npt.ArrayLike,
                    labels: list[str], metadata: dict[str, Any]) -> PopulationMatrix:
    u = np.asarray(u, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if u.shape != (len(weights), len(candidates)):
        raise StepError(f"utilities have shape {u.shape}, expected ({len(weights)}, {len(candidates)})")
    if not np.all(np.isfinite(u)):
        raise StepError(f"the preference sources gave non-finite utilities for prompt {prompt.pk}")
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


@dataclass
class PromptPopulation:
    """A prompt's population as arrays, with the candidates in column order."""

    prompt: Prompt
    candidates: list[Candidate]
    pop: Population

    @property
    def candidate_ids(self) -> list[int]:
        return [c.pk for c in self.candidates]

    def columns(self, generator_id: int | None) -> npt.NDArray[np.intp]:
        return np.array([i for i, c in enumerate(self.candidates) if c.generator_id == generator_id], dtype=np.intp)

    def empirical(self, generator_id: int | None) -> npt.NDArray[np.float64]:
        """The generator's sampling distribution over all columns (multiplicities; 0 elsewhere)."""
        mu = np.zeros(len(self.candidates))
        for i in self.columns(generator_id):
            mu[i] = self.candidates[i].multiplicity
        if mu.sum() == 0:
            raise StepError(f"prompt {self.prompt.pk} has no candidates from generator {generator_id}")
        return mu / mu.sum()


def load_population(prompt: Prompt) -> PromptPopulation:
    try:
        matrix = prompt.population
    except PopulationMatrix.DoesNotExist:
        raise StepError(f"prompt {prompt.pk} has no population yet") from None
    by_id = {c.pk: c for c in Candidate.objects.filter(pk__in=matrix.candidate_ids)}
    missing = [pk for pk in matrix.candidate_ids if pk not in by_id]
    if missing:
        raise StepError(f"the population of prompt {prompt.pk} refers to deleted candidates {missing[:5]}")
    candidates = [by_id[pk] for pk in matrix.candidate_ids]
    pop = Population(utilities_from_bytes(matrix.utilities), np.asarray(matrix.weights, dtype=np.float64))
    return PromptPopulation(prompt=prompt, candidates=candidates, pop=pop)


# --------------------------------------------------------------------------------------------
# Building it from the preference sources


def build_population(prompt: Prompt, preference_sources: list[PreferenceSource]) -> PopulationMatrix:
    """Stack every source's types into the prompt's population (`workers.populations.combine_sources`).

    Source weights split the population's mass between sources; a source's own type weights
    split its share. Columns are `population_candidates(prompt)` (attention checks excluded).
    """
    candidates = population_candidates(prompt)
    if not candidates:
        raise StepError(f"prompt {prompt.pk} has no candidates")
    if not preference_sources:
        raise StepError("the study has no preference sources")
    parts = []
    for source in preference_sources:
        problems = source_problems(source)
        if problems:
            raise StepError(f"preference source {source.pk} ({source.get_kind_display()}): " + " ".join(problems))
        try:
            parts.append(source_utilities(source, prompt, candidates))
        except ValueError as exc:
            raise StepError(
                f"preference source {source.pk} ({source.get_kind_display()}), prompt {prompt_key(prompt)}: {exc}"
            ) from exc
    names = [f"{s.kind}-{s.pk}" for s in preference_sources]
    u, weights, labels = populations.combine_sources(parts, [s.weight for s in preference_sources], names=names)
    metadata = {"sources": [{"id": s.pk, "kind": s.kind, "weight": s.weight, "types": len(p.type_labels)}
                            for s, p in zip(preference_sources, parts, strict=True)]}
    return save_population(prompt, candidates, u, weights, list(labels), metadata)


def build_populations(study: Study, *, on_progress: OnProgress = no_progress) -> dict[str, Any]:
    """Every prompt's population from the study's preference sources; one prompt per transaction."""
    sources = list(study.preference_sources.order_by("id"))
    prompts = list(study.prompts.order_by("id"))
    types = 0
    for i, prompt in enumerate(prompts):
        on_progress(i, len(prompts), f"Population for prompt {i + 1} of {len(prompts)}")
        matrix = build_population(prompt, sources)
        types = len(matrix.weights)
    return {"prompts": len(prompts), "types": types, "sources": [s.kind for s in sources]}
