"""The population step's inputs: preference source params per kind, and a CSV missing rows."""

from __future__ import annotations

import pytest

from studies.models import PopulationMatrix
from studies.steps import StepError, population
from studies.steps.preference_sources import source_params_problems
from tests.csv_study import csv_study

pytestmark = pytest.mark.django_db


def test_a_csv_without_rows_for_some_candidates_fails_with_a_readable_error():
    study, prompts = csv_study(n_prompts=1)
    source = study.preference_sources.get()
    first, second, *rest = population.population_candidates(prompts[0])
    source.data = f"type,candidate_id,utility\na,{first.pk},1\na,{second.pk},2\n"
    source.save()
    missing = ", ".join(str(c.pk) for c in rest)
    with pytest.raises(StepError, match=f"line 2: type 'a' has no utility for candidate\\(s\\) {missing}"):
        population.build_population(prompts[0], [source])
    assert not PopulationMatrix.objects.filter(prompt=prompts[0]).exists()


@pytest.mark.parametrize(
    ("kind", "params", "fragment"),
    [
        ("persona_judge", {}, "personas"),
        ("persona_judge", {"personas": ["x"], "question_template": "no fields"}, "{response}"),
        ("embedding", {"personas": ["x", "y"], "weights": [1]}, "weights"),
        ("reward_model", {}, "models"),
        ("csv", {"delimiter": ";"}, "Unknown params delimiter"),
        ("persona_judge", {"personas": ["x"], "typo": 1}, "Unknown params typo"),
    ],
)
def test_source_params_are_checked_per_kind(kind, params, fragment):
    problems = source_params_problems(kind, params)
    assert any(fragment in p for p in problems), problems


def test_valid_source_params_have_no_problems():
    assert source_params_problems("persona_judge", {"personas": ["a teacher", "a child"], "weights": [2, 1]}) == []
    assert source_params_problems("reward_model", {"models": ["/models/rm"]}) == []
    assert source_params_problems("csv", {}) == []
