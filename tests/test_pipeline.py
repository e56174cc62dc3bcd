"""The DB ↔ arrays glue of the candidate pipeline, on hand-made pools and CSV populations (no models)."""

from __future__ import annotations

import numpy as np
import pytest

import workers.policies as wp
from studies import pipeline
from studies.models import (
    Assignment,
    Candidate,
    ComparisonItem,
    ItemCandidate,
    Policy,
    PolicyFit,
    PopulationMatrix,
    PreferenceSource,
)
from studies.sources import params_problems
from tests.factories import (
    make_candidate,
    make_generator,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db

# Three types over four pool candidates: a Condorcet-like split plus a fourth, dominated response.
UTILITIES = {"a": [3, 2, 1, 0], "b": [1, 3, 2, 0], "c": [2, 1, 3, 0]}


def _csv(prompts, utilities=UTILITIES) -> str:
    """Utilities by candidate id; column j of a row is the prompt's j-th candidate in population order."""
    lines = ["type,candidate_id,utility,prompt"]
    for prompt in prompts:
        ids = [c.pk for c in pipeline.population_candidates(prompt)]
        for name, row in utilities.items():
            lines += [f"{name},{ids[j]},{u},{prompt.external_id}" for j, u in enumerate(row)]
    return "\n".join(lines)


def _study(n_prompts=2, kinds=("sample", "multiplayer", "nlhf"), **overrides):
    generator = make_generator()
    study = make_study(**{"generator": generator, "pool_size": 6, "k_values": [1, 2], "attention_check_rate": 0.0, **overrides})
    prompts = [make_prompt(study=study, external_id=f"p{i}") for i in range(n_prompts)]
    for prompt in prompts:
        for j, mult in enumerate([2, 2, 1, 1]):
            make_candidate(prompt=prompt, generator=generator, sample_index=j * 2, multiplicity=mult)
    for kind in kinds:
        make_policy(study=study, name=kind, kind=kind)
    PreferenceSource.objects.create(study=study, kind="csv", data=_csv(prompts))
    return study, prompts


def _prepare(study, prompts):
    sources = list(study.preference_sources.all())
    policies = list(study.policies.order_by("id"))
    for prompt in prompts:
        pipeline.build_population(prompt, sources)
        pipeline.fit_prompt_policies(prompt, policies, study.k_values)
    drafts = {p.pk: pipeline.draft_prompt_items(p, policies) for p in prompts}
    n_checks = pipeline.attention_check_count(study, sum(pipeline.judged_count(d) for d in drafts.values()))
    counts = pipeline.ItemCounts()
    for i, prompt in enumerate(prompts):
        checks = n_checks // len(prompts) + (i < n_checks % len(prompts))
        counts.add(pipeline.save_prompt_items(prompt, drafts[prompt.pk] + pipeline.draft_attention_items(prompt, checks)))
    return counts


def _snapshot(study):
    return sorted(
        (ic.item.prompt_id, ic.item.policy_id or 0, ic.item.k, ic.item.opponent_label, ic.item.replicate,
         ic.item.is_attention_check, ic.candidate_id, ic.slot, ic.count_policy, ic.count_opponent)
        for ic in ItemCandidate.objects.filter(item__study=study).select_related("item")
    )


def test_expected_credit_splits_ties_among_shown_texts_as_the_human_credit_does():
    u = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    # Type 0 ties texts 0 and 1 (credits 1 and 0) → ½; type 1 picks text 1 (credit 0) → 0.
    assert pipeline.expected_credit(u, np.array([0.5, 0.5]), [0, 1, 2], [1, 0, 2], [0, 1, 1]) == pytest.approx(0.25)
    # A text drawn by both sides is credited c_A / (c_A + c_B).
    assert pipeline.expected_credit(u, np.array([0.5, 0.5]), [1], [2], [1]) == pytest.approx(2 / 3)


def test_it_builds_population_fits_and_items_from_a_csv_population():
    study, prompts = _study()
    _prepare(study, prompts)

    matrix = prompts[0].population
    u = pipeline.utilities_from_bytes(matrix.utilities)
    assert u.shape == (3, 4)
    assert matrix.candidate_ids == [c.pk for c in pipeline.population_candidates(prompts[0])]
    assert sum(matrix.weights) == pytest.approx(1)

    assert PolicyFit.objects.filter(prompt__study=study).count() == 2 * 3 * 2
    for fit in PolicyFit.objects.filter(prompt__study=study):
        assert sum(fit.probabilities) == pytest.approx(1)
        assert 0 <= fit.predicted_robust_win_rate <= 1
    multiplayer = PolicyFit.objects.get(prompt=prompts[0], policy__name="multiplayer", k=2)
    assert multiplayer.certificate_kind == "exploitability"
    assert multiplayer.certificate < 1e-6
    # The equilibrium's guarantee k/(k+1) holds against every single response.
    assert multiplayer.predicted_robust_win_rate >= 2 / 3 - 1e-6
    sample = PolicyFit.objects.get(prompt=prompts[0], policy__name="sample", k=1)
    assert sample.probabilities == pytest.approx([2 / 6, 2 / 6, 1 / 6, 1 / 6])
    assert sample.certificate_kind == "none"

    # 2 prompts × 3 policies × 2 k × (2 other policies + adversary) × 1 replicate.
    items = ComparisonItem.objects.filter(study=study, is_attention_check=False)
    assert items.count() == 2 * 3 * 2 * 3
    for item in items.prefetch_related("shown"):
        shown = list(item.shown.all())
        assert sum(s.count_policy for s in shown) == item.k
        assert sum(s.count_opponent for s in shown) == item.m
        assert len({s.candidate_id for s in shown}) == len(shown)
        assert sorted(s.slot for s in shown) == list(range(len(shown)))
        assert 0 <= item.predicted_win_rate <= 1


def test_adversary_items_show_the_response_with_the_highest_pick_probability():
    study, prompts = _study(n_prompts=1, kinds=("sample",))
    _prepare(study, prompts)
    pp = pipeline.load_population(prompts[0])
    fit = PolicyFit.objects.get(prompt=prompts[0], k=2)
    g = wp.pick_probability(pp.pop, np.array(fit.probabilities), 2)
    adversary = pp.candidates[int(np.argmax(g))].pk
    item = ComparisonItem.objects.get(prompt=prompts[0], k=2, opponent_label="adversary")
    assert [s.candidate_id for s in item.shown.all() if s.count_opponent] == [adversary]
    assert item.draw["opponent"] == [adversary]


def test_rebuilding_gives_identical_items_and_adds_nothing():
    study, prompts = _study(attention_check_rate=0.2)
    first = _prepare(study, prompts)
    before = _snapshot(study)
    again = _prepare(study, prompts)
    assert first.created == len({row[:6] for row in before}) > 0
    assert again.created == again.replaced == again.removed == 0
    assert _snapshot(study) == before
    n_checks = ComparisonItem.objects.filter(study=study, is_attention_check=True).count()
    assert n_checks > 0
    assert Candidate.objects.filter(prompt__study=study, is_attention_check=True).count() == n_checks


def test_attention_checks_hold_one_broken_text_among_good_ones_at_the_study_rate():
    study, prompts = _study(attention_check_rate=0.25)
    _prepare(study, prompts)
    # The rate is of the items people see: items decided by construction are never shown.
    regular = ComparisonItem.objects.filter(study=study, is_attention_check=False, needs_judgment=True).count()
    checks = ComparisonItem.objects.filter(study=study, is_attention_check=True)
    assert checks.count() == round(0.25 / 0.75 * regular)
    for item in checks.prefetch_related("shown__candidate"):
        assert item.policy is None
        assert item.opponent_label == "attention"
        broken = [s for s in item.shown.all() if s.candidate.is_attention_check]
        good = [s for s in item.shown.all() if not s.candidate.is_attention_check]
        assert len(broken) == 1
        assert broken[0].credit == 0
        assert broken[0].candidate.generator is None
        assert broken[0].candidate.sample_index < 0
        assert good
        assert all(s.credit == 1 for s in good)


def test_items_already_assigned_are_kept_when_a_rebuild_would_draw_differently():
    study, prompts = _study(n_prompts=1, kinds=("sample", "nlhf"))
    _prepare(study, prompts)
    assigned = ComparisonItem.objects.filter(study=study, policy__name="sample").first()
    Assignment.objects.create(participant=make_participant(study=study), item=assigned)
    shown_before = sorted(assigned.shown.values_list("candidate_id", "count_policy", "count_opponent"))

    study.seed = 99
    study.save()
    counts = _prepare(study, prompts)

    assigned.refresh_from_db()
    assert sorted(assigned.shown.values_list("candidate_id", "count_policy", "count_opponent")) == shown_before
    assert counts.created == 0
    assert ComparisonItem.objects.filter(study=study, is_attention_check=False).count() == 1 * 2 * 2 * 2


def test_a_checkpoint_policy_is_its_own_candidates_empirical_distribution():
    study, prompts = _study(n_prompts=1, kinds=("sample",))
    other = make_generator()
    make_policy(study=study, name="ckpt", kind=Policy.Kind.CHECKPOINT, generator=other)
    prompt = prompts[0]
    make_candidate(prompt=prompt, generator=other, sample_index=0, multiplicity=3, text="checkpoint A")
    make_candidate(prompt=prompt, generator=other, sample_index=1, multiplicity=1, text="checkpoint B")
    source = study.preference_sources.get()
    source.data = _csv(prompts, {"a": [3, 2, 1, 0, 5, 4], "b": [1, 3, 2, 0, 0, 4]})
    source.save()
    _prepare(study, prompts)
    fit = PolicyFit.objects.get(policy__name="ckpt", prompt=prompt, k=1)
    by_id = dict(zip(fit.candidate_ids, fit.probabilities, strict=True))
    ckpt_ids = list(Candidate.objects.filter(generator=other).order_by("sample_index").values_list("pk", flat=True))
    assert [by_id[pk] for pk in ckpt_ids] == pytest.approx([0.75, 0.25])
    assert sum(by_id.values()) == pytest.approx(1)


def test_a_csv_without_rows_for_some_candidates_fails_with_a_readable_error():
    study, prompts = _study(n_prompts=1)
    source = study.preference_sources.get()
    first, second, *rest = pipeline.population_candidates(prompts[0])
    source.data = f"type,candidate_id,utility\na,{first.pk},1\na,{second.pk},2\n"
    source.save()
    missing = ", ".join(str(c.pk) for c in rest)
    with pytest.raises(pipeline.PipelineError, match=f"line 2: type 'a' has no utility for candidate\\(s\\) {missing}"):
        pipeline.build_population(prompts[0], [source])
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
    problems = params_problems(kind, params)
    assert any(fragment in p for p in problems), problems


def test_valid_source_params_have_no_problems():
    assert params_problems("persona_judge", {"personas": ["a teacher", "a child"], "weights": [2, 1]}) == []
    assert params_problems("reward_model", {"models": ["/models/rm"]}) == []
    assert params_problems("csv", {}) == []


def test_nul_characters_in_model_output_are_stored_replaced_and_merged():
    from types import SimpleNamespace

    study, prompts = _study(n_prompts=1, kinds=("sample",))
    generator = make_generator()
    merged = [
        SimpleNamespace(text="tea\x00time", multiplicity=2, indices=(0, 3), token_count=4),
        SimpleNamespace(text="tea\ufffdtime", multiplicity=1, indices=(1,), token_count=4),
        SimpleNamespace(text="coffee", multiplicity=1, indices=(2,), token_count=2),
    ]
    assert pipeline.save_prompt_pool(prompts[0], generator, merged, {"model": "x"}) == 2
    first = Candidate.objects.get(prompt=prompts[0], generator=generator, sample_index=0)
    assert first.text == "tea\ufffdtime"
    assert first.multiplicity == 3
    assert first.metadata["sample_indices"] == [0, 1, 3]
    assert "sanitised" in first.metadata
    # A second delivery writes nothing.
    assert pipeline.save_prompt_pool(prompts[0], generator, merged, {"model": "x"}) == 0


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
    assert any(fragment in p for p in pipeline.policy_params_problems(policy))
    assert pipeline.policy_params_problems(make_policy(study=study, kind=kind)) == []
