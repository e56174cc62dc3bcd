"""The difference between two policies' headlines with its own paired two-way interval (issue #25),
and a simulation check of its coverage (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.stats.difference import METHOD_TOO_FEW, difference_interval
from workers.stats.intervals import win_rate_interval


def simulated_study(rng: np.random.Generator, *, prompts: int = 16, annotators: int = 12, base=(0.7, 0.55)):
    """A paired design: every annotator judges each (prompt, policy) with probability ½; credit is
    Bernoulli(base_policy + prompt effect + annotator effect). The prompt effects of the two policies
    are correlated (a hard prompt is hard for both), and all effects have mean 0, so the true
    difference is base[0] − base[1]."""
    shared = rng.uniform(-0.15, 0.15, prompts)
    own = rng.uniform(-0.05, 0.05, (2, prompts))
    lenient = rng.uniform(-0.1, 0.1, annotators)
    sides = []
    for side in (0, 1):
        p, a = np.meshgrid(np.arange(prompts), np.arange(annotators), indexing="ij")
        keep = rng.random(p.shape) < 0.5
        p, a = p[keep], a[keep]
        prob = base[side] + shared[p] + own[side, p] + lenient[a]
        sides.append(((rng.random(p.size) < prob).astype(float), p, a))
    return sides


def test_the_estimate_is_the_difference_of_the_two_cells_and_the_interval_contains_it(rng):
    (ya, pa, aa), (yb, pb, ab) = simulated_study(rng)
    r = difference_interval(ya, pa, aa, yb, pb, ab)
    assert r.estimate == pytest.approx(win_rate_interval(ya, pa, aa).estimate - win_rate_interval(yb, pb, ab).estimate)
    assert r.low < r.estimate < r.high
    assert r.df == min(r.n_prompts, r.n_annotators) - 1


def test_the_interval_covers_the_true_difference_at_about_the_nominal_rate(rng):
    # 1000 simulated studies: the Monte Carlo standard error of a 95% coverage is
    # sqrt(0.95 × 0.05 / 1000) ≈ 0.0069; we accept 0.95 ± 0.03 (≈ 4 MC errors), which CGM's small
    # known undercoverage at 12 annotators (df 11) stays well inside.
    studies = 1000
    covered = 0
    for _ in range(studies):
        (ya, pa, aa), (yb, pb, ab) = simulated_study(rng)
        r = difference_interval(ya, pa, aa, yb, pb, ab)
        covered += r.low <= 0.15 <= r.high
    coverage = covered / studies
    assert abs(coverage - 0.95) < 0.03, coverage


def test_pairing_is_narrower_than_comparing_the_two_cells_as_if_independent(rng):
    # With prompt effects shared by both policies, the covariance cancels in the paired variance.
    # On average over 50 studies (single studies vary: the covariance is estimated from few clusters).
    paired, independent = [], []
    for _ in range(50):
        (ya, pa, aa), (yb, pb, ab) = simulated_study(rng)
        paired.append(difference_interval(ya, pa, aa, yb, pb, ab).se ** 2)
        independent.append(win_rate_interval(ya, pa, aa).se ** 2 + win_rate_interval(yb, pb, ab).se ** 2)
    assert np.mean(paired) < np.mean(independent)


def test_labels_are_shared_across_the_sides_and_decided_rows_have_no_annotator():
    # String labels: the same prompt in both sides is one cluster.
    r = difference_interval([1, 0, 1, 1], ["x", "y", "x", "y"], ["u", "u", "v", "v"],
                            [0, 0, 1, 0], ["x", "y", "x", "y"], ["u", "u", "v", "v"])
    assert (r.n_prompts, r.n_annotators) == (2, 2)
    assert r.estimate == pytest.approx(0.5)
    decided = difference_interval([1, 0, 0.5], [1, 2, 3], [7, 8, -99], [0, 1, 0.5], [1, 2, 3], [8, 7, -98],
                                  decided_a=[False, False, True], decided_b=[False, False, True])
    assert decided.n_annotators == 2
    assert decided.n_prompts == 3


def test_constant_cells_get_a_non_zero_width_and_too_few_clusters_the_whole_range():
    r = difference_interval([1.0] * 6, [1, 1, 2, 2, 3, 3], [1, 2] * 3, [0.0] * 6, [1, 1, 2, 2, 3, 3], [1, 2] * 3)
    assert r.estimate == 1.0
    assert r.low < 1.0
    assert r.high == 1.0
    few = difference_interval([1, 0], [1, 1], [1, 2], [0, 0], [1, 1], [1, 2])
    assert (few.low, few.high, few.method) == (-1.0, 1.0, METHOD_TOO_FEW)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"credit_b": [2.0]}, "credit_b"),
    ({"prompt_ids_b": [1, 2]}, "prompt_ids_b"),
    ({"weights_a": [1.0, -1.0]}, "weights_a"),
    ({"confidence": 1.5}, "confidence"),
])
def test_bad_input_names_the_argument(kwargs, message):
    args = {"credit_a": [1, 0], "prompt_ids_a": [1, 2], "annotator_ids_a": [1, 2],
            "credit_b": [0], "prompt_ids_b": [1], "annotator_ids_b": [1]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        difference_interval(**args)
