"""workers.stats.intervals and workers.stats.quality on synthetic data with a known truth (no database)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from workers.stats.intervals import (
    METHOD_CGM,
    METHOD_FEW,
    METHOD_TOO_FEW,
    few_clusters_interval,
    few_clusters_warning,
    robust_win_rate_interval,
    win_rate_interval,
)
from workers.stats.quality import (
    annotator_agreement,
    attention_failure_rate,
    position_bias,
    proportion,
    time_on_task,
)


def crossed_study(rng, *, n_prompts=30, n_annotators=25, per_annotator=24, mu=0.7, sd_prompt=0.8,
                  sd_annotator=0.6, tie_rate=0.1, shift=0.0):
    """Judgments with prompt and annotator random effects on the logit scale.

    Each annotator judges `per_annotator` distinct prompts; a judgment credits 1 with probability
    expit(mu + u_prompt + v_annotator), else 0, except a `tie_rate` share credited 2/3 (a k=2,
    m=1 "can't decide" analysed as a tie). Returns credit, prompt ids, annotator ids.
    """
    u = rng.normal(0, sd_prompt, n_prompts)
    v = rng.normal(0, sd_annotator, n_annotators)
    prompts = np.concatenate([rng.choice(n_prompts, per_annotator, replace=False) for _ in range(n_annotators)])
    annotators = np.repeat(np.arange(n_annotators), per_annotator)
    credit = (rng.random(prompts.size) < special.expit(mu + shift + u[prompts] + v[annotators])).astype(float)
    credit[rng.random(prompts.size) < tie_rate] = 2 / 3
    return credit, prompts, annotators


def crossed_truth(*, mu=0.7, sd_prompt=0.8, sd_annotator=0.6, tie_rate=0.1, shift=0.0):
    """The population win rate E[credit] over prompts and annotators, by Gauss–Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    scale = np.hypot(sd_prompt, sd_annotator)
    binary = np.sum(w * special.expit(mu + shift + scale * x)) / np.sum(w)
    return (1 - tie_rate) * binary + tie_rate * 2 / 3


def test_win_rate_is_the_mean_credit_and_the_interval_holds_it():
    credit = np.array([1, 0, 1, 1, 0.5, 1, 0, 1])
    result = win_rate_interval(credit, [1, 1, 2, 2, 3, 3, 4, 4], list("abababab"))
    assert result.estimate == pytest.approx(credit.mean())
    assert result.low <= result.estimate <= result.high
    assert (result.n, result.n_prompts, result.n_annotators, result.df) == (8, 4, 2, 1)
    assert result.method == METHOD_CGM


def test_variance_is_the_cameron_gelbach_miller_two_way_formula():
    credit = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    prompts = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    annotators = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    result = win_rate_interval(credit, prompts, annotators)
    e = (credit - credit.mean()) / credit.size

    def one_way(codes):
        g = np.unique(codes).size
        return g / (g - 1) * sum(e[codes == c].sum() ** 2 for c in np.unique(codes))

    two_way = one_way(prompts) + one_way(annotators) - one_way(prompts * 10 + annotators)
    assert result.variance["two_way"] == pytest.approx(two_way)
    expected_se = np.sqrt(max(two_way, one_way(prompts), one_way(annotators), result.variance["floor"]))
    assert result.se == pytest.approx(expected_se)
    half = stats.t.ppf(0.975, 2) * expected_se  # df = min(5 prompts, 3 annotators) - 1
    assert result.low == pytest.approx(max(0.0, credit.mean() - half))
    assert result.high == pytest.approx(min(1.0, credit.mean() + half))


def test_clustered_data_get_wider_intervals_than_the_same_data_without_clusters(rng):
    credit, prompts, annotators = crossed_study(rng, sd_prompt=1.2, sd_annotator=1.0)
    clustered = win_rate_interval(credit, prompts, annotators)
    unclustered = win_rate_interval(credit, np.arange(credit.size), np.arange(credit.size))
    assert clustered.estimate == unclustered.estimate
    assert clustered.high - clustered.low > 1.5 * (unclustered.high - unclustered.low)


def test_a_large_study_estimates_the_known_truth(rng):
    credit, prompts, annotators = crossed_study(rng, n_prompts=200, n_annotators=150, per_annotator=60)
    result = win_rate_interval(credit, prompts, annotators)
    assert result.low <= crossed_truth() <= result.high
    assert result.high - result.low < 0.12


def test_a_cell_where_every_judgment_credits_the_policy_still_has_an_interval():
    result = win_rate_interval(np.ones(6), [1, 2, 3, 1, 2, 3], [1, 1, 1, 2, 2, 2])
    assert result.estimate == 1.0
    assert result.high == 1.0
    assert result.low < 0.8


def test_one_prompt_or_one_annotator_gives_the_whole_unit_interval():
    one_prompt = win_rate_interval([1, 0, 1], [5, 5, 5], [1, 2, 3])
    one_annotator = win_rate_interval([1, 0, 1], [1, 2, 3], ["x", "x", "x"])
    for result in (one_prompt, one_annotator):
        assert (result.low, result.high, result.method) == (0.0, 1.0, METHOD_TOO_FEW)
        assert result.estimate == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"credit": [[1, 0]], "prompt_ids": [1, 2], "annotator_ids": [1, 2]}, "credit"),
        ({"credit": [], "prompt_ids": [], "annotator_ids": []}, "credit"),
        ({"credit": [1, np.nan], "prompt_ids": [1, 2], "annotator_ids": [1, 2]}, "credit"),
        ({"credit": [1, 1.5], "prompt_ids": [1, 2], "annotator_ids": [1, 2]}, "credit"),
        ({"credit": [1, -0.1], "prompt_ids": [1, 2], "annotator_ids": [1, 2]}, "credit"),
        ({"credit": [1, 0], "prompt_ids": [1, 2, 3], "annotator_ids": [1, 2]}, "prompt_ids"),
        ({"credit": [1, 0], "prompt_ids": [1, 2], "annotator_ids": [1]}, "annotator_ids"),
        ({"credit": [1, 0], "prompt_ids": [1.0, np.nan], "annotator_ids": [1, 2]}, "prompt_ids"),
        ({"credit": [1, 0], "prompt_ids": [1, 2], "annotator_ids": [1, 2], "confidence": 1.0}, "confidence"),
        ({"credit": [1, 0], "prompt_ids": [1, 2], "annotator_ids": [1, 2], "n_resamples": 0}, "n_resamples"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}"):
        win_rate_interval(**kwargs)


def test_robust_win_rate_with_one_opponent_equals_the_cell_interval(rng):
    credit, prompts, annotators = crossed_study(rng)
    cell = win_rate_interval(credit, prompts, annotators)
    robust = robust_win_rate_interval(credit, prompts, annotators, ["adversary"] * credit.size, rng=1)
    assert (robust.estimate, robust.low, robust.high) == pytest.approx((cell.estimate, cell.low, cell.high))
    assert robust.worst_opponent == "adversary"


def test_robust_win_rate_is_the_worst_opponent_with_a_simultaneous_band(rng):
    strong, p1, a1 = crossed_study(rng, shift=-1.0)
    weak, p2, a2 = crossed_study(rng, shift=1.0)
    credit = np.concatenate([strong, weak])
    opponents = ["strong"] * strong.size + ["weak"] * weak.size
    robust = robust_win_rate_interval(credit, np.concatenate([p1, p2]), np.concatenate([a1, a2]), opponents, rng=7)
    alone = win_rate_interval(strong, p1, a1)
    assert robust.worst_opponent == "strong"
    assert robust.estimate == pytest.approx(strong.mean())
    assert robust.critical_value > stats.t.ppf(0.975, alone.df)  # two opponents: a wider multiplier
    assert robust.low < alone.low
    assert robust.low <= robust.estimate <= robust.high
    again = robust_win_rate_interval(credit, np.concatenate([p1, p2]), np.concatenate([a1, a2]), opponents, rng=7)
    assert again == robust


def test_position_bias_counts_picks_per_displayed_position_against_chance():
    result = position_bias([1, 1, 1, 2, 1, 3], [2, 2, 2, 2, 3, 3])
    assert result.positions == (1, 2, 3)
    assert result.shown == (6, 6, 2)
    assert result.picked == (4, 1, 1)
    assert result.chance_rate[0] == pytest.approx((4 / 2 + 2 / 3) / 6)
    assert result.chance_rate[2] == pytest.approx(1 / 3)
    assert result.pick_rate == pytest.approx((4 / 6, 1 / 6, 1 / 2))


def test_position_bias_detects_an_annotator_who_always_picks_the_first(rng):
    biased = position_bias(np.ones(300, int), np.full(300, 3))
    fair = position_bias(rng.integers(1, 4, 300), np.full(300, 3))
    assert biased.p_value < 1e-6
    assert fair.p_value > 0.001


def test_agreement_is_fleiss_pairwise_agreement_against_uniform_chance():
    result = annotator_agreement([1, 1, 1, 2, 2, 3], [5, 5, 6, 7, 7, 9], [2, 2, 2, 4, 4, 2])
    assert result.observed == pytest.approx((1 / 3 + 1) / 2)
    assert result.chance == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert result.kappa == pytest.approx((result.observed - result.chance) / (1 - result.chance))
    assert (result.n_items, result.n_pairs) == (2, 4)


def test_agreement_is_near_zero_kappa_for_random_choosers(rng):
    items = np.repeat(np.arange(500), 3)
    result = annotator_agreement(items, items * 10 + rng.integers(0, 3, items.size), np.full(items.size, 3))
    assert abs(result.kappa) < 0.1


def test_time_on_task_and_attention_failures():
    timing = time_on_task([1000, 3000, 2000, np.nan])
    assert (timing.n, timing.median_s, timing.mean_s) == (3, 2.0, 2.0)
    failures = attention_failure_rate([True, True, False, True])
    assert (failures.count, failures.n, failures.rate) == (1, 4, 0.25)
    assert failures.low < 0.25 < failures.high
    assert np.isnan(proportion(0, 0).rate)


@pytest.mark.slow
def test_95_percent_intervals_cover_the_truth_in_93_to_97_percent_of_400_crossed_studies():
    """Prompts and annotators both vary: the coverage the issue asks us to prove."""
    rng = np.random.default_rng(20261122)
    truth = crossed_truth()
    covered = sum(
        (r := win_rate_interval(*crossed_study(rng))).low <= truth <= r.high for _ in range(400)
    )
    assert 0.93 <= covered / 400 <= 0.97


@pytest.mark.slow
def test_robust_interval_covers_the_minimum_when_two_opponents_tie():
    """The hardest case for a min: two opponents with the same true win rate."""
    rng = np.random.default_rng(20261123)
    truth = crossed_truth()
    covered = 0
    for seed in range(400):
        first, p1, a1 = crossed_study(rng)
        second, p2, a2 = crossed_study(rng)
        labels = np.repeat(["a", "b"], [first.size, second.size])
        r = robust_win_rate_interval(np.concatenate([first, second]), np.concatenate([p1, p2]),
                                     np.concatenate([a1, a2]), labels, n_resamples=2000, rng=seed)
        covered += r.low <= truth <= r.high
    assert covered / 400 >= 0.93


# --- Items decided by construction (one text shown: credit k/(k+m), no annotator) -------------------


def with_decided(rng, *, n_decided=12, credit_value=2 / 3, n_prompts=30):
    """A crossed study plus `n_decided` decided rows on random prompts (annotator ids: junk)."""
    credit, prompts, annotators = crossed_study(rng, n_prompts=n_prompts, n_annotators=6, per_annotator=10)
    d_prompts = rng.choice(n_prompts, n_decided)
    return (np.concatenate([credit, np.full(n_decided, credit_value)]), np.concatenate([prompts, d_prompts]),
            np.concatenate([annotators, -1 - np.arange(n_decided)]),
            np.concatenate([np.zeros(credit.size, bool), np.ones(n_decided, bool)]))


def test_a_decided_row_of_weight_r_is_the_same_as_r_decided_copies(rng):
    credit, prompts, annotators, decided = with_decided(rng)
    weights = np.where(decided, 3.0, 1.0)
    weighted = win_rate_interval(credit, prompts, annotators, weights=weights, decided=decided)
    copies = np.concatenate([np.arange(credit.size)] + [np.flatnonzero(decided)] * 2)
    repeated = win_rate_interval(credit[copies], prompts[copies], annotators[copies], decided=decided[copies])
    assert (weighted.estimate, weighted.low, weighted.high, weighted.se) == pytest.approx(
        (repeated.estimate, repeated.low, repeated.high, repeated.se))
    expected = (credit[~decided].sum() + 3 * credit[decided].sum()) / (np.sum(~decided) + 3 * decided.sum())
    assert weighted.estimate == pytest.approx(expected)
    assert weighted.decided_share == pytest.approx(3 * decided.sum() / weights.sum())
    assert (weighted.n, weighted.n_decided) == (np.sum(~decided), decided.sum())


def test_decided_rows_add_no_annotators_to_the_clusters_or_the_degrees_of_freedom(rng):
    credit, prompts, annotators, decided = with_decided(rng)
    result = win_rate_interval(credit, prompts, annotators, decided=decided)
    judged_only = win_rate_interval(credit[~decided], prompts[~decided], annotators[~decided])
    assert result.n_annotators == judged_only.n_annotators == 6
    assert result.df == min(result.n_prompts, 6) - 1 == 5
    # Their annotator ids are ignored: giving them all one id, or the ids of real people, changes nothing.
    for junk in (np.zeros(decided.sum()), annotators[:decided.sum()]):
        other = annotators.copy()
        other[decided] = junk
        assert win_rate_interval(credit, prompts, other, decided=decided) == result
    # Counted as pseudo-annotators (one per row) they would inflate the degrees of freedom.
    assert win_rate_interval(credit, prompts, annotators).df > result.df


def test_a_cell_of_decided_items_alone_is_their_credit_with_prompt_degrees_of_freedom():
    result = win_rate_interval([2 / 3] * 6, [1, 1, 2, 3, 4, 5], [0] * 6, decided=[True] * 6, weights=[3] * 6)
    assert result.estimate == pytest.approx(2 / 3)
    assert (result.n, result.n_decided, result.n_annotators, result.df) == (0, 6, 0, 4)
    assert result.low < 2 / 3 < result.high  # the Agresti–Coull floor: six prompts are not the population
    assert result.decided_share == 1.0


def test_robust_win_rate_passes_weights_and_decided_rows_to_each_opponent(rng):
    credit, prompts, annotators, decided = with_decided(rng)
    weights = np.where(decided, 2.5, 1.0)
    cell = win_rate_interval(credit, prompts, annotators, weights=weights, decided=decided)
    robust = robust_win_rate_interval(credit, prompts, annotators, ["adv"] * credit.size, weights=weights,
                                      decided=decided, rng=1)
    assert (robust.estimate, robust.low, robust.high) == pytest.approx((cell.estimate, cell.low, cell.high))
    two = robust_win_rate_interval(credit, prompts, annotators, np.where(decided, "copy", "adv"), weights=weights,
                                   decided=decided, rng=1)
    assert two.worst_opponent == ("adv" if credit[~decided].mean() < 2 / 3 else "copy")
    assert two.per_opponent[two.opponents.index("copy")].estimate == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"weights": [1, 0]}, "weights"),
        ({"weights": [1, np.inf]}, "weights"),
        ({"weights": [1]}, "weights"),
        ({"decided": [True]}, "decided"),
        ({"decided": [2, 0]}, "decided"),
    ],
)
def test_bad_weights_or_decided_flags_raise_value_error_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}"):
        win_rate_interval([1, 0], [1, 2], [1, 2], **kwargs)


# --- Few clusters: 3-5 annotators (issue #11.6) -------------------------------------------------


def few_annotator_study(rng, *, n_annotators, n_prompts=30, judgments=1600, mu=0.4, sd_prompt=0.8,
                        sd_annotator=0.3, tie_rate=0.1):
    """Every annotator judges every prompt about judgments / (n_prompts * n_annotators) times."""
    reps = max(1, judgments // (n_prompts * n_annotators))
    u, v = rng.normal(0, sd_prompt, n_prompts), rng.normal(0, sd_annotator, n_annotators)
    prompts = np.tile(np.repeat(np.arange(n_prompts), reps), n_annotators)
    annotators = np.repeat(np.arange(n_annotators), n_prompts * reps)
    credit = (rng.random(prompts.size) < special.expit(mu + u[prompts] + v[annotators])).astype(float)
    credit[rng.random(prompts.size) < tie_rate] = 2 / 3
    return credit, prompts, annotators


def test_few_clusters_interval_keeps_the_estimate_and_se_and_only_relaxes_the_degrees_of_freedom(rng):
    data = few_annotator_study(rng, n_annotators=3)
    usual, few = win_rate_interval(*data), few_clusters_interval(*data)
    assert few.method == METHOD_FEW
    assert (few.estimate, few.se, few.variance) == (usual.estimate, usual.se, usual.variance)
    assert few.df >= usual.df == 2
    assert usual.low <= few.low <= few.estimate <= few.high <= usual.high
    assert few_clusters_interval(*data) == few  # deterministic: no resampling


def test_few_clusters_interval_is_narrower_when_the_prompts_carry_the_variance(rng):
    data = few_annotator_study(rng, n_annotators=3, sd_annotator=0.0)
    usual, few = win_rate_interval(*data), few_clusters_interval(*data)
    assert few.high - few.low < 0.8 * (usual.high - usual.low)
    assert few.df > 4


def test_few_clusters_interval_with_one_annotator_or_decided_rows_alone_behaves_like_the_usual_one():
    one = few_clusters_interval([1, 0, 1, 1], ["p1", "p1", "p2", "p2"], [7, 7, 7, 7])
    assert (one.low, one.high, one.method) == (0.0, 1.0, METHOD_TOO_FEW)
    decided = few_clusters_interval([2 / 3] * 4, [1, 2, 3, 4], [0, 0, 0, 0], decided=[True] * 4)
    assert decided.df == 3
    assert decided.estimate == pytest.approx(2 / 3)


def test_few_clusters_interval_rejects_bad_input_naming_the_argument():
    with pytest.raises(ValueError, match="confidence"):
        few_clusters_interval([1, 0], [1, 2], [1, 2], confidence=1.5)
    with pytest.raises(ValueError, match="annotator_ids"):
        few_clusters_interval([1, 0], [1, 2], [1])


def test_a_design_with_fewer_than_five_annotators_or_prompts_gets_a_warning():
    assert few_clusters_warning(40, 5) is None
    message = few_clusters_warning(40, 3)
    assert "3 annotators" in message
    assert "prompt" not in message.split(":")[0]
    assert "1 prompt and 2 annotators" in few_clusters_warning(1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("n_annotators", [3, 5])
def test_few_clusters_interval_covers_93_to_97_percent_of_400_studies_and_is_narrower(n_annotators):
    """3 or 5 annotators, 30 prompts, ~1,600 judgments: df = min(G) - 1 = 2 or 4 wastes the prompts."""
    rng = np.random.default_rng(20261201 + n_annotators)
    truth = crossed_truth(mu=0.4, sd_annotator=0.3)
    covered, widths, usual_widths = 0, [], []
    for _ in range(400):
        data = few_annotator_study(rng, n_annotators=n_annotators)
        few, usual = few_clusters_interval(*data), win_rate_interval(*data)
        covered += few.low <= truth <= few.high
        widths.append(few.high - few.low)
        usual_widths.append(usual.high - usual.low)
    assert 0.93 <= covered / 400 <= 0.97
    assert np.mean(widths) < 0.9 * np.mean(usual_widths)
