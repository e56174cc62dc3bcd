"""Which candidates the fit held out, and whether a prompt's best text was among them.

The fit step (`studies/steps/fit.py`) holds a share of each pool out of fitting and records the
held-out candidate ids in each fit's stats (`held_out_candidates`). When the population's best
text of a prompt is held out, the fitted policies cannot choose it, and their rate against the
adversary over every candidate (what the items measure) falls below what the pool promised;
the study's page says so (docs/theory.md, "Held-out responses").

"Best" is the text with the highest type-weighted mean calibrated quantile under the pool's
sampling distribution (`workers.policies.ctrl.quantile_rewards`, the scale-free reward
best-of-N uses): a type's utilities are only an order, so raw utilities are not compared
across types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from studies.models import PolicyFit, Prompt, Study
from studies.steps import StepError
from studies.steps.population import load_population
from workers.policies.ctrl import quantile_rewards


@dataclass(frozen=True)
class BestHeldOut:
    prompt_id: int
    candidate_id: int
    held_out: int  # texts held out of the prompt's pool
    pool: int  # texts in the prompt's pool


def held_out_by_prompt(study: Study) -> dict[int, list[int]]:
    """Prompt id → the candidate ids its fits held out (as the fit step recorded them)."""
    held: dict[int, list[int]] = {}
    for prompt_id, stats in PolicyFit.objects.filter(policy__study=study).values_list("prompt_id", "solver_stats"):
        ids = (stats or {}).get("held_out_candidates") or []
        if ids and prompt_id not in held:
            held[prompt_id] = [int(i) for i in ids]
    return held


def best_candidate_id(prompt: Prompt, generator_id: int | None) -> tuple[int, int] | None:
    """(the prompt's best candidate id among its pool, the pool's size), None without a population."""
    try:
        pp = load_population(prompt)
        columns = pp.columns(generator_id)
        if not len(columns):
            return None
        rewards = np.asarray(quantile_rewards(pp.pop, pp.empirical(generator_id)))
    except StepError:
        return None
    best = int(columns[int(np.argmax(rewards[columns]))])
    return pp.candidates[best].pk, len(columns)


def best_held_out(study: Study) -> list[BestHeldOut]:
    """The prompts whose best text under the population was held out of fitting."""
    found = []
    held = held_out_by_prompt(study)
    for prompt in study.prompts.filter(pk__in=held).order_by("id"):
        best = best_candidate_id(prompt, study.generator_id)
        if best is not None and best[0] in held[prompt.pk]:
            found.append(BestHeldOut(prompt.pk, best[0], len(held[prompt.pk]), best[1]))
    return found


def best_held_out_warning(study: Study) -> str:
    """One sentence for the study's page, or "" when no prompt lost its best text."""
    found = best_held_out(study)
    if not found:
        return ""
    names = ", ".join(f"prompt #{b.prompt_id} (candidate #{b.candidate_id}, {b.held_out} of {b.pool} held out)"
                      for b in found[:5]) + (" …" if len(found) > 5 else "")
    return (f"The held-out share removed the best text under the population from {len(found)} prompt(s): "
            f"{names}. Their fitted policies could not choose it, so their rates against the adversary fall "
            "below the pool's; set the held-out share to 0 (or use larger pools) in a copy of the study.")
