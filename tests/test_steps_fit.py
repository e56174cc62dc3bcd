"""The fit step: policies as distributions over a prompt's candidates, and their params' checks."""

from __future__ import annotations

import pytest

from studies.models import Candidate, Policy, PolicyFit
from studies.steps import fit
from tests.csv_study import csv_study, prepare, utilities_csv
from tests.factories import make_candidate, make_generator, make_policy, make_study

pytestmark = pytest.mark.django_db


def test_a_checkpoint_policy_is_its_own_candidates_empirical_distribution():
    study, prompts = csv_study(n_prompts=1, kinds=("sample",))
    other = make_generator()
    make_policy(study=study, name="ckpt", kind=Policy.Kind.CHECKPOINT, generator=other)
    prompt = prompts[0]
    make_candidate(prompt=prompt, generator=other, sample_index=0, multiplicity=3, text="checkpoint A")
    make_candidate(prompt=prompt, generator=other, sample_index=1, multiplicity=1, text="checkpoint B")
    source = study.preference_sources.get()
    source.data = utilities_csv(prompts, {"a": [3, 2, 1, 0, 5, 4], "b": [1, 3, 2, 0, 0, 4]})
    source.save()
    prepare(study, prompts)
    fit = PolicyFit.objects.get(policy__name="ckpt", prompt=prompt, k=1)
    by_id = dict(zip(fit.candidate_ids, fit.probabilities, strict=True))
    ckpt_ids = list(Candidate.objects.filter(generator=other).order_by("sample_index").values_list("pk", flat=True))
    assert [by_id[pk] for pk in ckpt_ids] == pytest.approx([0.75, 0.25])
    assert sum(by_id.values()) == pytest.approx(1)


@pytest.mark.parametrize(
    ("kind", "params", "fragment"),
    [
        ("best_of_n", {"n": 0}, "n must be"),
        ("nlhf", {"beta": -1}, "beta must be"),
        ("ctrl", {"target_kl": 0}, "target_kl must be"),
        ("multiplayer", {"k": 2}, "unknown param 'k'"),
        ("sample", {"beta": 1}, "takes none"),
    ],
)
def test_policy_params_are_checked_per_kind(kind, params, fragment):
    study = make_study()
    policy = make_policy(study=study, kind=kind, params=params)
    assert any(fragment in p for p in fit.policy_params_problems(policy))
    assert fit.policy_params_problems(make_policy(study=study, kind=kind)) == []
