"""The demo configuration end to end: the real SmolLM2-135M-Instruct as generator and persona judge."""

from __future__ import annotations

import pytest

from studies import services
from studies.models import (
    Candidate,
    ComparisonItem,
    Job,
    PolicyFit,
    PreferenceSource,
    Study,
)
from studies.tasks import (
    build_items,
    build_populations,
    fit_policies,
    generate_candidates,
)
from tests.factories import make_generator, make_policy, make_prompt, make_study

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_the_demo_study_is_prepared_with_the_real_smollm2():
    generator = make_generator(model_ref="smollm2-135m-instruct", decoding={"max_new_tokens": 24, "temperature": 1.0},
                               batch_size=4)
    study = make_study(generator=generator, pool_size=6, k_values=[1, 2], attention_check_rate=0.2)
    make_prompt(study=study, text="Give me one tip for brewing green tea.")
    for kind in ("sample", "best_of_n", "nlhf", "ctrl", "multiplayer"):
        make_policy(study=study, name=kind, kind=kind)
    PreferenceSource.objects.create(
        study=study, kind="persona_judge",
        params={"personas": ["A tea master who values precise temperatures.", "A busy student who wants it quick."]},
    )
    parent = services.prepare_study(study=study)
    for kind, task in [("generate", generate_candidates), ("populate", build_populations), ("fit", fit_policies),
                       ("build_items", build_items)]:
        task(parent.steps.get(kind=kind).pk)

    study.refresh_from_db()
    assert study.status == Study.Status.READY, parent.steps.exclude(status="done").values_list("error", flat=True)
    pool = Candidate.objects.filter(generator=generator)
    assert sum(pool.values_list("multiplicity", flat=True)) == 6
    assert all(c.text.strip() for c in pool)
    assert pool.first().metadata["model"]["ref"] == "smollm2-135m-instruct"
    assert parent.steps.get(kind=Job.Kind.GENERATE).result["tokens"] > 0
    population = study.prompts.get().population
    assert len(population.weights) == 2
    assert PolicyFit.objects.filter(policy__study=study).count() == 5 * 2
    assert ComparisonItem.objects.filter(study=study, is_attention_check=False).count() == 5 * 2 * 5
