"""The anytime-valid interval and the stopping rules of workers.stats.sequential (pure, no database)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.stats import sequential as sq


def test_confidence_sequence_matches_the_robbins_mixture_formula() -> None:
    x = np.array([0.2, 0.9, 0.4, 0.7, 0.5])
    rho, alpha = 0.3, 0.05
    cs = sq.confidence_sequence(x, alpha=alpha, rho=rho, max_variance=0.25)
    t = 5
    mean = x.mean()
    var = (((x - mean) ** 2).sum() + 0.25) / (t + 1)
    v = t * var * rho**2 + 1
    radius = math.sqrt(2 * v / (t**2 * rho**2) * math.log(math.sqrt(v) / alpha))
    assert cs.estimate[-1] == pytest.approx(mean)
    assert cs.radius[-1] == pytest.approx(radius)
    assert cs.low[-1] == pytest.approx(mean - radius)


def test_sequence_is_wider_than_the_fixed_interval_but_survives_monitoring() -> None:
    rng = np.random.default_rng(7)
    x = rng.beta(2, 2, size=(600, 300))  # mean ½
    cs = sq.confidence_sequence(x, rho=sq.tuned_rho(150, sd=0.22))
    fixed = sq.fixed_interval(x)
    assert np.all(cs.radius[:, 20:] > fixed.radius[:, 20:])
    cs_miss = ((cs.low > 0.5) | (cs.high < 0.5)).any(axis=1).mean()
    fixed_miss = ((fixed.low > 0.5) | (fixed.high < 0.5))[:, 9:].any(axis=1).mean()
    # 600 studies: MC sd of a 0.05 rate is 0.009; the monitored t-interval misses far more often.
    assert cs_miss <= 0.05 + 3 * 0.009
    assert fixed_miss > 0.2


def test_tuned_rho_makes_the_sequence_tightest_at_the_planned_time() -> None:
    sd, planned = 0.3, 200
    rho = sq.tuned_rho(planned, sd=sd)
    x = np.full(planned, 0.5)
    x[::2] += sd
    x[1::2] -= sd  # sample sd ≈ sd

    def radius_at_planned(r: float) -> float:
        return float(sq.confidence_sequence(x, rho=r, max_variance=1e-12).radius[-1])

    best = radius_at_planned(rho)
    assert best <= radius_at_planned(rho * 1.5)
    assert best <= radius_at_planned(rho / 1.5)


def test_answers_read_the_interval() -> None:
    seq = sq.Sequence(
        estimate=np.array([0.9, 0.9, 0.9, 0.1, 0.02]),
        radius=np.array([0.05, 0.05, 0.05, 0.05, 0.03]),
        count=np.arange(1.0, 6.0),
        alpha=0.05,
        method="test",
    )
    assert sq.answer_threshold(seq, 0.8, min_units=2).tolist() == [0, 1, 1, 2, 2]
    diff = sq.answer_difference(seq, margin=0.06, min_units=1)
    assert diff.tolist() == [1, 1, 1, 1, sq.EQUIVALENT]
    assert sq.answer_difference(seq, 0.0, min_units=1).tolist() == [1, 1, 1, 1, 0]
    assert sq.answer_precision([seq], 0.04, min_units=1).tolist() == [0, 0, 0, 0, 1]
    assert sq.first_answer(np.array([[0, 0, 2, 1], [0, 0, 0, 0]])).tolist() == [3, 0]


def test_fixed_sample_size_is_the_normal_formula() -> None:
    # (1.96 + 1.2816)² · (0.2 / 0.05)² = 168.1 → 169
    assert sq.fixed_sample_size(0.2, 0.05, alpha=0.05, power=0.9) == 169


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.5, "rho": 0.1}, "alpha"),
        ({"alpha": 0.05, "rho": 0.0}, "rho"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sq.confidence_sequence([0.5, 0.5], **kwargs)


def test_nan_units_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        sq.confidence_sequence([0.5, math.nan], rho=0.1)
    with pytest.raises(ValueError, match="min_units"):
        sq.answer_threshold(sq.fixed_interval([0.1, 0.2]), 0.5, min_units=0)
