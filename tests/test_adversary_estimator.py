"""The annotators' adversary (issue #21): which opponents are screened, and the estimate after selection.

`screening_opponents` starts from the model's adversary and adds lists the model is unsure about;
`screened_minimum` selects each prompt's opponent on the screening share only, estimates it on the
confirmation share, and brackets the target between the plug-in minimum and the confirmed value.
The slow test reruns a reduced bench/bench_annotators_adversary.py (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import workers.policies as wp
from workers.stats.adversary import screened_minimum, screening_opponents


def _pop(seed: int = 3, types: int = 6, n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, size=(types, n)), np.full(types, 1 / types)


def test_screen_starts_with_the_models_adversary_and_holds_distinct_lists() -> None:
    for m in (1, 2):
        u, w = _pop()
        pi = np.asarray(wp.solve_multiplayer(wp.Population(u, w), 2).policy)
        pi = np.clip(pi, 0, None) / np.clip(pi, 0, None).sum()
        lists = screening_opponents(u, w, pi, 2, m, n_opponents=4, rng=1)
        assert lists[0] == wp.find_adversary(wp.Population(u, w), pi, 2, m).responses
        assert 1 <= len(lists) <= 4
        assert len(set(lists)) == len(lists)
        assert all(len(y) == m for y in lists)


def test_screen_adds_the_worst_list_of_a_perturbed_model() -> None:
    # Two types of weights .51/.49, one prefers 0 and the other 1 to the policy's text 2: the model's
    # adversary is 0 (picked by .51), and resampling the types' weights makes 1 the worst about half
    # the time, so it must be screened; with n_model = 1 nothing else takes the place.
    u = np.array([[2.0, -1.0, 0.0, -2.0, -3.0], [-1.0, 2.0, 0.0, -2.0, -3.0]])
    pi = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    lists = screening_opponents(u, [0.51, 0.49], pi, 1, n_opponents=2, n_model=1, utility_sd=0.0, rng=0)
    assert lists == [(0,), (1,)]
    only_model = screening_opponents(u, [0.51, 0.49], pi, 1, n_opponents=3, n_model=1, n_perturbations=0)
    assert only_model == [(0,)]


def _rows(spec: list[tuple[str, str, list[float], bool]]) -> dict[str, np.ndarray]:
    credit, prompt, annotator, opponent, confirm = [], [], [], [], []
    for p, o, ys, c in spec:
        for i, y in enumerate(ys):
            credit.append(y)
            prompt.append(p)
            annotator.append(f"{p}{o}{c}{i}")
            opponent.append(o)
            confirm.append(c)
    return {"credit": np.array(credit), "prompt_ids": np.array(prompt), "annotator_ids": np.array(annotator),
            "opponent_ids": np.array(opponent), "confirmation": np.array(confirm)}


def test_selection_uses_the_screening_share_only_and_prompts_count_equally() -> None:
    rows = _rows([
        # prompt a: the screen says "x" is worse; its confirmation rows are what is estimated,
        # even though the confirmation rows against "y" (there by mistake) are lower still.
        ("a", "x", [0, 0, 1, 0], False), ("a", "y", [1, 1, 0, 1], False),
        ("a", "x", [1, 0, 1, 1, 1, 0, 1, 1], True), ("a", "y", [0, 0, 0, 0], True),
        ("b", "x", [1, 1, 1, 0], False), ("b", "y", [0, 1, 0, 0], False),
        ("b", "y", [0, 1], True),
    ])
    res = screened_minimum(**rows, confidence=0.9)
    assert res.selected == {"a": "x", "b": "y"}
    assert res.estimate == pytest.approx((6 / 8 + 1 / 2) / 2)  # prompt means, averaged
    assert res.n_confirm == 10
    assert res.n_screen == 16
    # plug-in: per prompt the lowest per-opponent mean over all rows (a: y = 3/8; b: y = 2/6)
    assert res.plug_in == pytest.approx((3 / 8 + 2 / 6) / 2)
    assert res.low <= res.plug_in <= res.estimate <= res.high
    assert res.low == pytest.approx(res.lower.low)
    assert res.high == pytest.approx(res.confirmed.high)


def test_ties_in_the_screen_fall_back_on_the_model() -> None:
    rows = _rows([("a", "x", [1, 0], False), ("a", "y", [0, 1], False), ("a", "y", [1, 0, 1], True),
                  ("b", "x", [1, 0], False), ("b", "x", [1, 1], True)])
    res = screened_minimum(**rows, model_win_rates={("a", "x"): 0.8, ("a", "y"): 0.6})
    assert res.selected == {"a": "y", "b": "x"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"credit": np.array([0.5, 2.0])}, "credit"),
        ({"confirmation": np.array([True])}, "same length"),
        ({"confirmation": np.array([False, False])}, "no confirmation"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(change: dict[str, np.ndarray], message: str) -> None:
    rows = {"credit": np.array([0.5, 1.0]), "prompt_ids": np.array([1, 1]), "annotator_ids": np.array([1, 2]),
            "opponent_ids": np.array([7, 7]), "confirmation": np.array([False, True])}
    rows.update(change)
    with pytest.raises(ValueError, match=message):
        screened_minimum(**rows)


def test_interval_covers_a_known_minimum_in_a_simple_simulation() -> None:
    """Bernoulli opponents per prompt with a close second: the plug-in min alone is biased low, the
    confirmed estimate is not, and the interval covers the true mean of minima."""
    rng = np.random.default_rng(5)
    truth_rates = rng.uniform(0.5, 0.8, size=(20, 3))
    truth = float(truth_rates.min(axis=1).mean())
    hits, plug, est = 0, [], []
    for _ in range(200):
        spec = []
        for p in range(20):
            for o in range(3):
                spec.append((str(p), str(o), list(rng.random(6) < truth_rates[p, o]), False))
        screen = _rows(spec)
        means = {(p, o): np.mean(ys) for p, o, ys, _ in spec}
        for p in range(20):
            o = min(range(3), key=lambda j, p=p: (means[(str(p), str(j))], j))
            spec.append((str(p), str(o), list(rng.random(10) < truth_rates[p, o]), True))
        res = screened_minimum(**_rows(spec))
        hits += res.low <= truth <= res.high
        plug.append(res.plug_in)
        est.append(res.estimate)
        assert screen["credit"].size == res.n_screen
    assert np.mean(plug) < truth < np.mean(est) + 0.01
    assert hits / 200 >= 0.93  # MC SE ≈ 0.015 at 0.95; the union-bound interval is conservative


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bench_reduced_bias_and_coverage_at_sd_half() -> None:
    """bench/bench_annotators_adversary.py at sd 0.5, k = 3 equilibrium, 100 studies: the new
    headline's bias within ±0.03 (+2 Monte Carlo SE) and coverage ≥ 0.90, and today's biased up."""
    path = Path(__file__).resolve().parent.parent / "bench" / "bench_annotators_adversary.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_annotators_adversary", path)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up while it loads
    spec.loader.exec_module(bench)
    row = bench.cell(0.5, "equilibrium", 3, 100, prompts=30, annotators=40, screen=8, confirm=12)
    mc = row.new_bias_sd / 10
    assert abs(row.new_bias) <= 0.03 + 2 * mc
    assert row.new_cover >= 0.90
    assert row.old_bias > 0.03
