"""The held-out split is reproducible from content (issue #21): the study's seed and the prompt's
text, over the pool's texts in SHA-256 order, so two identical studies and a study and its copy
hold out the same texts whatever ids their rows got."""

from __future__ import annotations

import numpy as np
import pytest

from studies import services
from studies.models import PolicyFit, PreferenceSource, Prompt
from studies.steps import fit
from studies.steps.population import load_population
from tests.csv_study import prepare, utilities_csv
from tests.factories import (
    make_candidate,
    make_generator,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db

PROMPTS = [f"Describe the colour {c} to someone who has never seen it." for c in ("red", "blue", "green", "amber")]
POOL = 8  # two held out at the default fraction ¼
UTILITIES = {t: list(np.random.default_rng(i).permutation(POOL)) for i, t in enumerate("abc")}


def _pool(prompt: Prompt, generator, *, reverse: bool = False) -> None:
    """The prompt's pool, the same texts for every study; `reverse` creates them in the other order."""
    order = range(POOL - 1, -1, -1) if reverse else range(POOL)
    for j in order:
        make_candidate(prompt=prompt, generator=generator, sample_index=j, text=f"{prompt.text} Answer {j}.")


def _study(generator, *, seed: int = 5, reverse: bool = False):
    study = make_study(generator=generator, pool_size=POOL, k_values=[2], attention_check_rate=0.0, seed=seed)
    prompts = [make_prompt(study=study, text=text, external_id=f"p{i}") for i, text in enumerate(PROMPTS)]
    for prompt in prompts:
        _pool(prompt, generator, reverse=reverse)
    return study, prompts


def _held_out_texts(study, prompts) -> list[list[str]]:
    out = []
    for prompt in prompts:
        pp = load_population(prompt)
        columns = fit.held_out_columns(study, pp)
        out.append(sorted(pp.candidates[int(i)].text for i in columns.held_out))
    return out


def _fits(study) -> list[tuple]:
    """Each fit's predictions, by prompt text and policy name (no ids)."""
    return sorted(
        (f.prompt.text, f.policy.name, f.k, round(f.held_out_robust_win_rate, 12), round(f.pool_robust_win_rate, 12),
         round(f.predicted_robust_win_rate, 12))
        for f in PolicyFit.objects.filter(policy__study=study).select_related("prompt", "policy")
    )


def _with_population(study, prompts, *, policies: bool = True) -> None:
    for kind in ("sample", "multiplayer") if policies else ():
        make_policy(study=study, name=kind, kind=kind)
    PreferenceSource.objects.create(study=study, kind="csv", data=utilities_csv(prompts, UTILITIES))
    prepare(study, prompts)


def test_two_identical_studies_hold_out_the_same_texts_and_fit_the_same():
    generator = make_generator()
    first, first_prompts = _study(generator)
    second, second_prompts = _study(generator, reverse=True)  # other ids, other creation order
    _with_population(first, first_prompts)
    _with_population(second, second_prompts)
    held_first, held_second = _held_out_texts(first, first_prompts), _held_out_texts(second, second_prompts)
    assert held_first == held_second
    assert all(len(texts) == 2 for texts in held_first)
    # The split depends on the prompt's content: not the same answer numbers on every prompt.
    assert len({tuple(t.split("Answer ")[1] for t in texts) for texts in held_first}) > 1

    assert _fits(first) == _fits(second)


def test_another_seed_holds_out_other_texts():
    generator = make_generator()
    first, first_prompts = _study(generator, seed=5)
    other, other_prompts = _study(generator, seed=6)
    _with_population(first, first_prompts)
    _with_population(other, other_prompts)
    assert _held_out_texts(first, first_prompts) != _held_out_texts(other, other_prompts)


def test_a_copy_of_a_study_holds_out_the_same_texts():
    generator = make_generator()
    original, prompts = _study(generator)
    _with_population(original, prompts)
    copy = services.copy_study_as_draft(study=original)
    copy_prompts = list(copy.prompts.order_by("id"))
    assert [p.text for p in copy_prompts] == PROMPTS
    assert copy.seed == original.seed
    for prompt in reversed(copy_prompts):  # the copy's pools are prepared afresh, in another order
        _pool(prompt, generator, reverse=True)
    PreferenceSource.objects.filter(study=copy).delete()  # a CSV source names the original's candidates
    _with_population(copy, copy_prompts, policies=False)  # the copy has the original's policies
    assert _held_out_texts(copy, copy_prompts) == _held_out_texts(original, prompts)
    assert _fits(copy) == _fits(original)


def test_the_content_seed_is_the_texts_hash_not_an_id():
    assert fit.content_seed("a prompt") == fit.content_seed("a prompt")
    assert fit.content_seed("a prompt") != fit.content_seed("another prompt")
    assert len(fit.content_seed("x")) == 8
    assert all(0 <= word < 2**32 for word in fit.content_seed("x"))
