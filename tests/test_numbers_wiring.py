"""Issue #11's maths wired into the steps and the results: one per-position tie rule, the true
m-output adversary, held-out responses, scale-free single rewards, an honest headline, few-cluster
intervals and regularised fits flagged (real PostgreSQL; no models)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from django.urls import reverse

import workers.policies as wp
from studies import simulated_annotators
from studies.estimate.plot import results_plot_svg
from studies.estimate.results import compute_results
from studies.models import Assignment, ComparisonItem, PolicyFit, PreferenceSource
from studies.steps import fit, population
from tests.csv_study import csv_study, prepare, utilities_csv
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)
from tests.judgments import make_judgment
from workers.stats import intervals

pytestmark = pytest.mark.django_db

# Likert-style utilities with many ties at the top (five types over four texts).
TIED = {"t1": [3, 3, 1, 2], "t2": [1, 3, 3, 1], "t3": [3, 1, 3, 3], "t4": [3, 2, 3, 1], "t5": [3, 2, 2, 3]}


def per_text_credit(u: np.ndarray, w: np.ndarray, c_a: np.ndarray, c_b: np.ndarray) -> float:
    """The rule issue #11 removed: a tie split per distinct text (for a contrast only)."""
    shown = np.flatnonzero(c_a + c_b)
    sub = u[:, shown]
    top = sub == sub.max(axis=1, keepdims=True)
    share = c_a[shown] / (c_a[shown] + c_b[shown])
    return float(w @ ((top * share).sum(axis=1) / top.sum(axis=1)))


def tied_study(**overrides):
    study, prompts = csv_study(n_prompts=1, kinds=("multiplayer", "nlhf"), held_out_fraction=0, **overrides)
    PreferenceSource.objects.filter(study=study).update(data=utilities_csv(prompts, TIED))
    prepare(study, prompts)
    return study, prompts[0]


def counts_of(item: ComparisonItem, pp: population.PromptPopulation) -> tuple[np.ndarray, np.ndarray]:
    column = {c.pk: j for j, c in enumerate(pp.candidates)}
    c_a, c_b = np.zeros(len(pp.candidates), dtype=int), np.zeros(len(pp.candidates), dtype=int)
    for shown in item.shown.all():
        c_a[column[shown.candidate_id]] = shown.count_policy
        c_b[column[shown.candidate_id]] = shown.count_opponent
    return c_a, c_b


# --------------------------------------------------------------------------------------------
# One tie rule


def test_item_predictions_split_ties_per_position_like_the_solver():
    study, prompt = tied_study(k_values=[2, 3], replicates=4)
    pp = population.load_population(prompt)
    differs = 0
    for item in ComparisonItem.objects.filter(study=study).prefetch_related("shown"):
        c_a, c_b = counts_of(item, pp)
        assert item.predicted_win_rate == pytest.approx(wp.expected_credit(pp.pop, c_a, c_b))
        differs += abs(item.predicted_win_rate - per_text_credit(pp.pop.utilities, pp.pop.weights, c_a, c_b)) > 1e-9
    assert differs > 0  # the tie-heavy population makes the two rules disagree on some shown sets


def test_simulated_annotators_pick_a_tied_text_in_proportion_to_the_positions_it_fills(rng):
    study = make_study(k_values=[2])
    prompt = make_prompt(study=study)
    item = make_item(study=study, prompt=prompt, policy=make_policy(study=study), texts=["ours", "theirs"],
                     counts=[(2, 0), (0, 1)])
    candidates = [s.candidate for s in item.shown.order_by("slot")]
    population.save_population(prompt, candidates, [[1.0, 1.0]], [1.0], ["indifferent"], {})
    participant = make_participant(study=study)
    assignment = Assignment.objects.create(participant=participant, item=item,
                                           display_order=[s.pk for s in item.shown.order_by("slot")])
    minds = simulated_annotators.Minds(study)
    picks = [simulated_annotators._pick(participant, assignment.pk, [1, 2], minds, rng, None) for _ in range(3000)]
    # The policy's text fills two of the three tied positions: ⅔ (per text it would be ½).
    assert np.mean(np.array(picks) == 1) == pytest.approx(2 / 3, abs=0.03)


# --------------------------------------------------------------------------------------------
# The m-output adversary and the bound


def test_with_two_opponent_outputs_the_adversary_is_the_worst_pair_and_predicted_is_the_m_output_rate():
    study, prompts = csv_study(n_prompts=1, kinds=("multiplayer",), opponent_outputs=2, held_out_fraction=0)
    prepare(study, prompts)
    pp = population.load_population(prompts[0])
    for k in study.k_values:
        fitted = PolicyFit.objects.get(prompt=prompts[0], k=k)
        pi = np.array(fitted.probabilities)
        worst = min(itertools.combinations_with_replacement(range(4), 2),
                    key=lambda pair: wp.multiset_win_rate(pp.pop, pi, k, list(pair)))
        assert fitted.predicted_robust_win_rate == pytest.approx(wp.robust_win_rate_m(pp.pop, pi, k, 2))
        item = ComparisonItem.objects.get(prompt=prompts[0], k=k, opponent_label="adversary")
        column = {c.pk: j for j, c in enumerate(pp.candidates)}
        fielded = [column[pk] for pk in item.draw["opponent"]]
        assert len(fielded) == item.m == 2
        assert wp.multiset_win_rate(pp.pop, pi, k, fielded) == pytest.approx(
            wp.multiset_win_rate(pp.pop, pi, k, list(worst)))
        # Not two copies of the single-output adversary: the worst pair is worse than those.
        single = wp.find_adversary(pp.pop, pi, k).responses * 2
        assert wp.multiset_win_rate(pp.pop, pi, k, list(single)) > fitted.predicted_robust_win_rate + 0.01


def test_the_plot_draws_the_bound_that_holds_for_m(judged_study):
    svg = results_plot_svg(compute_results(judged_study))
    assert "equilibrium's guarantee" in svg
    ComparisonItem.objects.filter(study=judged_study).update(m=2)
    svg = results_plot_svg(compute_results(judged_study))
    assert "from 1−2/(k+1) (an equilibrium's guarantee) to k/(k+2) (no policy exceeds)" in svg


# --------------------------------------------------------------------------------------------
# Held-out responses


def eight_text_study(**overrides):
    study, prompts = csv_study(n_prompts=1, kinds=("sample", "best_of_n", "ctrl", "nlhf", "multiplayer"), **overrides)
    prompt = prompts[0]
    for j in range(4, 8):  # four more texts: eight in the pool
        prompt.candidates.create(generator=study.generator, sample_index=2 * j, text=f"extra {j}", multiplicity=1)
    rng = np.random.default_rng(5)
    utilities = {name: list(rng.normal(size=8).round(3)) for name in ("a", "b", "c", "d")}
    PreferenceSource.objects.filter(study=study).update(data=utilities_csv(prompts, utilities))
    prepare(study, prompts)
    return study, prompt


def test_a_quarter_of_the_pool_is_held_out_of_fitting_and_reported_beside_the_pool_certificate():
    study, prompt = eight_text_study()
    pp = population.load_population(prompt)
    split = fit.held_out_columns(study, pp)
    assert (len(split.held_out), len(split.fitted)) == (2, 6)
    held_ids = [pp.candidates[j].pk for j in split.held_out]
    for fitted in PolicyFit.objects.filter(prompt=prompt).select_related("policy"):
        pi = np.array(fitted.probabilities)
        assert fitted.solver_stats["held_out_candidates"] == held_ids
        if fitted.policy.kind == "sample":
            assert pi[split.held_out].sum() > 0  # plain sampling is the generator: it fits nothing
        else:
            assert pi[split.held_out].sum() == 0
        pool = wp.find_adversary(pp.pop, pi, fitted.k, candidates=split.fitted).win_rate
        held = wp.find_adversary(pp.pop, pi, fitted.k, candidates=split.held_out).win_rate
        assert fitted.pool_robust_win_rate == pytest.approx(pool)
        assert fitted.held_out_robust_win_rate == pytest.approx(held)
        assert fitted.predicted_robust_win_rate == pytest.approx(min(pool, held))
    equilibrium = PolicyFit.objects.get(prompt=prompt, policy__kind="multiplayer", k=2)
    assert equilibrium.pool_robust_win_rate == pytest.approx(2 / 3, abs=1e-6)  # certified on the pool only
    # The split is the study's: the same seed gives the same held-out texts.
    assert [pp.candidates[j].pk for j in fit.held_out_columns(study, pp).held_out] == held_ids


def test_the_adversary_items_are_chosen_over_fitted_and_held_out_texts():
    study, prompt = eight_text_study()
    pp = population.load_population(prompt)
    for item in ComparisonItem.objects.filter(prompt=prompt, opponent_label="adversary").select_related("policy"):
        fitted = PolicyFit.objects.get(prompt=prompt, policy=item.policy, k=item.k)
        g = wp.pick_probability(pp.pop, np.array(fitted.probabilities), item.k)
        assert item.draw["opponent"] == [pp.candidates[int(np.argmax(g))].pk]


@pytest.mark.parametrize(("fraction", "n_texts"), [(0.0, 8), (0.25, 3)])
def test_nothing_is_held_out_with_a_zero_share_or_a_pool_under_four_texts(fraction, n_texts):
    study, prompts = csv_study(n_prompts=1, kinds=("multiplayer",), held_out_fraction=fraction)
    prompt = prompts[0]
    if n_texts == 3:
        prompt.candidates.filter(sample_index=6).delete()
        PreferenceSource.objects.filter(study=study).update(
            data=utilities_csv(prompts, {"a": [3, 2, 1], "b": [1, 3, 2], "c": [2, 1, 3]}))
    prepare(study, prompts)
    for fitted in PolicyFit.objects.filter(prompt=prompt):
        assert fitted.held_out_robust_win_rate is None
        assert fitted.solver_stats["held_out_candidates"] == []
        assert fitted.predicted_robust_win_rate == pytest.approx(fitted.pool_robust_win_rate)


def test_a_held_out_share_of_one_or_more_is_refused_by_the_form_not_the_database():
    study = make_study()
    study.held_out_fraction = 1.0
    with pytest.raises(Exception, match="held-out share"):
        study.full_clean()


# --------------------------------------------------------------------------------------------
# Scale-free single rewards


def two_source_study():
    study, prompts = csv_study(n_prompts=1, kinds=("best_of_n", "ctrl"), held_out_fraction=0)
    PreferenceSource.objects.filter(study=study).delete()
    first = PreferenceSource.objects.create(study=study, kind="csv", data=utilities_csv(prompts, {"a": [1, 0, 0.5, 0.2]}))
    second = PreferenceSource.objects.create(study=study, kind="csv",
                                             data=utilities_csv(prompts, {"b": [0, 0.2, 0.1, 0.15]}))
    return study, prompts, first, second


def test_rescaling_one_source_tenfold_moves_neither_ctrl_nor_best_of_n():
    study, prompts, _, second = two_source_study()
    prepare(study, prompts)
    before = {(f.policy.name, f.k): f.probabilities for f in PolicyFit.objects.filter(policy__study=study)}
    mean_before = np.argmax(population.load_population(prompts[0]).pop.utilities.mean(axis=0))

    second.data = utilities_csv(prompts, {"b": [0, 2, 1, 1.5]})  # ×10: every type keeps its order
    second.save()
    prompts = list(study.prompts.all())  # fresh rows: a prompt caches its population
    prepare(study, prompts)

    after = {(f.policy.name, f.k): f.probabilities for f in PolicyFit.objects.filter(policy__study=study)}
    # The mean of raw utilities, the reward before issue #11, would now pick another text.
    assert np.argmax(population.load_population(prompts[0]).pop.utilities.mean(axis=0)) != mean_before
    assert after.keys() == before.keys()
    for key, probabilities in before.items():
        assert after[key] == pytest.approx(probabilities, abs=1e-12), key


# --------------------------------------------------------------------------------------------
# Few clusters, the headline on the page, regularised fits


def test_few_annotators_take_the_few_clusters_interval_and_the_page_says_why(researcher_client, judged_study):
    results = compute_results(judged_study)
    assert {cell.interval.method for cell in results.cells} == {intervals.METHOD_FEW}
    assert "3 annotators" in results.few_clusters_warning
    html = researcher_client.get(reverse("studies:results", args=[judged_study.slug])).content.decode()
    assert 'id="few-clusters-warning"' in html
    assert "3 annotators" in html


def test_the_page_shows_the_headline_cell_the_conservative_min_and_the_pool_and_held_out_predictions(
        researcher_client, judged_study):
    PolicyFit.objects.filter(policy__study=judged_study).update(pool_robust_win_rate=0.71, held_out_robust_win_rate=0.62)
    html = researcher_client.get(reverse("studies:results", args=[judged_study.slug])).content.decode()
    assert "Headline: against the adversary" in html
    assert "Conservative: min over all opponents" in html
    assert "0.833" in html  # the adversary cell (5/6)
    assert "0.444" in html  # the min over opponents (beta, 4/9)
    assert "0.710" in html
    assert "0.620" in html


def test_a_regularised_multiplayer_fit_is_flagged_on_the_results_page_and_in_the_admin(researcher_client):
    study = make_study(k_values=[2])
    policy = make_policy(study=study, name="mp-kl", kind="multiplayer", params={"beta": 0.1})
    exact = make_policy(study=study, name="mp-exact", kind="multiplayer")
    people = [make_participant(study=study) for _ in range(3)]
    for i in range(3):
        prompt = make_prompt(study=study)
        for p in (policy, exact):
            item = make_item(study=study, prompt=prompt, policy=p, texts=[f"a{i}{p.pk}", f"b{i}{p.pk}"],
                             counts=[(2, 0), (0, 1)])
            for n, person in enumerate(people):
                make_judgment(item=item, participant=person, pick=n % 2)
    rows = {row.policy: row for row in compute_results(study).robust}
    assert rows["mp-kl"].regularised.startswith("regularised (β = 0.1)")
    assert rows["mp-exact"].regularised == ""
    html = researcher_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert html.count("not the k/(k+1) guarantee") == 1
    admin_html = researcher_client.get(reverse("admin:studies_policy_changelist")).content.decode()
    assert "regularised (β = 0.1): not the k/(k+1) guarantee" in admin_html
