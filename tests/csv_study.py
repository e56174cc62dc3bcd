"""A study whose population comes from an uploaded CSV (no models), and the steps run on it.

Shared by the tests of `studies.steps` (tests/test_steps_*.py); `byo_study` (imported pools,
no generator at all) by the candidate-import and broker tests.
"""

from __future__ import annotations

from studies.candidate_import import import_candidates
from studies.models import ItemCandidate, PreferenceSource, Study
from studies.steps import fit, items, population
from tests.factories import (
    make_candidate,
    make_generator,
    make_policy,
    make_prompt,
    make_study,
)

# Three types over four pool candidates: a Condorcet-like split plus a fourth, dominated response.
UTILITIES = {"a": [3, 2, 1, 0], "b": [1, 3, 2, 0], "c": [2, 1, 3, 0]}


def utilities_csv(prompts, utilities=UTILITIES) -> str:
    """Utilities by candidate id; column j of a row is the prompt's j-th candidate in population order."""
    lines = ["type,candidate_id,utility,prompt"]
    for prompt in prompts:
        ids = [c.pk for c in population.population_candidates(prompt)]
        for name, row in utilities.items():
            lines += [f"{name},{ids[j]},{u},{prompt.external_id}" for j, u in enumerate(row)]
    return "\n".join(lines)


def csv_study(n_prompts=2, kinds=("sample", "multiplayer", "nlhf"), **overrides):
    generator = make_generator()
    study = make_study(**{"generator": generator, "pool_size": 6, "k_values": [1, 2], "attention_check_rate": 0.0, **overrides})
    prompts = [make_prompt(study=study, external_id=f"p{i}") for i in range(n_prompts)]
    for prompt in prompts:
        for j, mult in enumerate([2, 2, 1, 1]):
            make_candidate(prompt=prompt, generator=generator, sample_index=j * 2, multiplicity=mult)
    for kind in kinds:
        make_policy(study=study, name=kind, kind=kind)
    PreferenceSource.objects.create(study=study, kind="csv", data=utilities_csv(prompts))
    return study, prompts


def prepare(study, prompts) -> items.ItemCounts:
    """Populations and fits prompt by prompt, then the study's items (`studies.steps.items.build_items`)."""
    sources = list(study.preference_sources.all())
    policies = list(study.policies.order_by("id"))
    for prompt in prompts:
        population.build_population(prompt, sources)
        fit.fit_prompt_policies(prompt, policies, study.k_values)
    return items.build_items(study)


def snapshot(study):
    return sorted(
        (ic.item.prompt_id, ic.item.policy_id or 0, ic.item.k, ic.item.opponent_label, ic.item.replicate,
         ic.item.is_attention_check, ic.candidate_id, ic.slot, ic.count_policy, ic.count_opponent)
        for ic in ItemCandidate.objects.filter(item__study=study).select_related("item")
    )


# Pools to import (`studies.candidate_import`): identical texts merge, adding their counts.
POOLS_CSV = """external_id,prompt,candidate,count,source
tea,How do I brew green tea?,Use water at 80 °C for two minutes.,3,model-a
tea,,Boil it hard for ten minutes.,1,model-b
tea,How do I brew green tea?,Use water at 80 °C for two minutes.,2,model-b
tea,,"Steep it briefly, then taste.",,
sky,Why is the sky blue?,Rayleigh scattering.,2,model-a
sky,,Because it reflects the sea.,1,model-a
sky,,Air scatters blue light more than red.,1,
"""


def byo_study() -> Study:
    """A study without a generator: imported pools, three policies, a utilities CSV naming the imported ids."""
    study = make_study(pool_size=4, k_values=[1, 2], attention_check_rate=0.2)
    assert import_candidates(study=study, filename="pools.csv", data=POOLS_CSV.encode()).ok
    for kind in ("sample", "multiplayer", "nlhf"):
        make_policy(study=study, name=kind, kind=kind)
    lines = ["type,candidate_id,utility,prompt"]
    for prompt in study.prompts.order_by("id"):
        for t, name in enumerate(["terse", "careful", "odd"]):
            lines += [f"{name},{c.pk},{(j * (t + 2)) % 4},{prompt.external_id}"
                      for j, c in enumerate(population.population_candidates(prompt))]
    PreferenceSource.objects.create(study=study, kind="csv", data="\n".join(lines))
    return study
