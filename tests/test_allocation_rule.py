"""The pure allocation rule (`workers.stats.allocation`, issue #22): states and priorities from the
cells' anytime-valid intervals, successive elimination and LUCB over an opponent group."""

from __future__ import annotations

import numpy as np
import pytest

from workers.stats import allocation as al
from workers.stats import sequential as sq

ALPHA = 0.05
RHO = sq.tuned_rho(100, alpha=ALPHA, sd=0.5)


def stats_of(*cells: np.ndarray) -> al.CellStats:
    return al.CellStats.of(list(cells))


def test_stats_match_the_sequences_own_running_sums(rng):
    units = rng.random(57)
    stats = al.CellStats.empty((1,))
    for x in units:
        stats = stats.add(np.array([True]), np.array([x]))
    direct = al.CellStats.of([units])
    np.testing.assert_allclose([stats.n[0], stats.mean[0], stats.squares[0]],
                               [direct.n[0], direct.mean[0], direct.squares[0]], rtol=1e-12)
    # and the radius is the CS's at the last unit
    cs = sq.confidence_sequence(units, alpha=ALPHA, rho=RHO)
    out = al.allocate(direct, alpha=ALPHA, rho=RHO, half_width=0.01)
    assert out.radius[0] == pytest.approx(cs.radius[-1])
    assert out.estimate[0] == pytest.approx(cs.estimate[-1])


def test_early_cells_come_first_narrow_and_answered_ones_last_the_rest_between(rng):
    early = rng.random(5)
    narrow = np.full(400, 0.5) + rng.normal(0, 0.01, 400)
    answered = np.clip(rng.normal(0.9, 0.05, 60), 0, 1)  # far above c = 0.6
    undecided = rng.choice([0.0, 1.0], 40)  # wide, around 0.5
    out = al.allocate(stats_of(early, narrow, answered, undecided), alpha=ALPHA, rho=RHO, half_width=0.05,
                      threshold=[np.nan, np.nan, 0.6, 0.6])
    assert [al.STATE_NAMES[s] for s in out.state] == ["early", "narrow", "answered", "open"]
    assert out.priority.tolist() == [2, 0, 0, 1]
    assert out.low[2] > 0.6


def test_a_cell_inside_the_margin_is_answered_and_one_without_a_unit_is_early():
    at_c = np.full(2000, 0.7)
    out = al.allocate(stats_of(at_c, np.array([])), alpha=ALPHA, rho=RHO, half_width=0.001, threshold=0.7, margin=0.08)
    assert al.STATE_NAMES[out.state[0]] == "answered"
    assert out.state[1] == al.EARLY
    assert np.isinf(out.radius[1])


def test_opponents_surely_not_the_worst_are_eliminated_and_the_lucb_pair_goes_first(rng):
    worst = np.clip(rng.normal(0.40, 0.1, 80), 0, 1)
    close = np.clip(rng.normal(0.45, 0.1, 80), 0, 1)
    middle = np.clip(rng.normal(0.50, 0.1, 80), 0, 1)
    far = np.clip(rng.normal(0.95, 0.02, 80), 0, 1)
    alone = rng.choice([0.0, 1.0], 80)
    out = al.allocate(stats_of(worst, close, middle, far, alone), alpha=ALPHA, rho=RHO, half_width=0.01,
                      groups=[0, 0, 0, 0, -1])
    names = [al.STATE_NAMES[s] for s in out.state]
    assert names[3] == "eliminated"
    assert out.priority[3] == 0
    # the leader (lowest estimate) and the challenger (lowest low end among the rest) get priority 2
    leader = int(np.argmin(out.estimate[:3]))
    assert names[leader] == "lucb"
    assert sorted(names[:3]).count("lucb") == 2
    assert names[4] == "open"


def test_a_group_down_to_one_contender_follows_its_own_question(rng):
    low = np.clip(rng.normal(0.3, 0.05, 200), 0, 1)
    high = np.clip(rng.normal(0.9, 0.05, 200), 0, 1)
    out = al.allocate(stats_of(low, high), alpha=ALPHA, rho=RHO, half_width=0.001, groups=[0, 0])
    assert [al.STATE_NAMES[s] for s in out.state] == ["open", "eliminated"]


def test_without_a_half_width_only_the_question_decides(rng):
    narrow = np.full(400, 0.5) + rng.normal(0, 0.01, 400)  # radius well under 0.05, but straddling c = 0.5
    with_target = al.allocate(stats_of(narrow), alpha=ALPHA, rho=RHO, half_width=0.05, threshold=0.5)
    question_only = al.allocate(stats_of(narrow), alpha=ALPHA, rho=RHO, threshold=0.5)
    assert with_target.state.tolist() == [al.NARROW]
    assert question_only.state.tolist() == [al.OPEN]


def test_not_of_interest_cells_get_nothing_first(rng):
    out = al.allocate(stats_of(rng.random(3), rng.random(3)), alpha=ALPHA, rho=RHO, half_width=0.05,
                      of_interest=[True, False])
    assert out.state.tolist() == [al.EARLY, al.NOT_ASKED]
    assert out.priority.tolist() == [2, 0]


def test_vectorised_over_studies_as_one_by_one(rng):
    per_study = [[rng.random(rng.integers(0, 60)) for _ in range(4)] for _ in range(30)]
    kwargs = {"alpha": ALPHA, "rho": RHO, "half_width": 0.08, "threshold": 0.5, "margin": 0.1, "groups": [0, 0, 1, 1]}
    singles = [al.allocate(al.CellStats.of(cells), **kwargs) for cells in per_study]
    stacked = [al.CellStats.of(cells) for cells in per_study]
    many = al.allocate(al.CellStats(*(np.stack([getattr(s, f) for s in stacked]) for f in ("n", "mean", "squares"))),
                       **kwargs)
    assert np.array_equal(many.state, np.stack([s.state for s in singles]))
    assert np.array_equal(many.priority, np.stack([s.priority for s in singles]))


@pytest.mark.parametrize("kwargs", [
    {"alpha": 0.0}, {"alpha": 1.0}, {"half_width": 0.0}, {"margin": -0.1}, {"rho": 0.0}, {"min_units": 0},
    {"groups": [0]}, {"of_interest": [True]}, {"threshold": np.inf},
])
def test_bad_inputs_are_refused(kwargs):
    base = {"alpha": ALPHA, "rho": RHO, "half_width": 0.05}
    with pytest.raises(ValueError, match="must|need"):
        al.allocate(stats_of(np.ones(3), np.ones(3)), **{**base, **kwargs})
    with pytest.raises(ValueError, match="finite"):
        al.CellStats.of([np.array([np.nan])])
