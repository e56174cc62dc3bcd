"""The reproduction check at small sizes: theory.md §7 populations, simulated annotators over HTTP, f̂(k).

Annotators work one at a time (concurrency 1) and draw from fixed seeds, so which annotator meets
which item, and every pick, is the same on every run: a pass here is deterministic, not lucky
timing. Sizes were chosen with bench/reproduction_power.py, which replays the same designs without
HTTP over 60 seeds (docs/reproduction.md): the majority design at 16 prompts tells NLHF from the
multiplayer policy at k = 4 for 60 of 60 seeds, and its headline interval and min band cover the
theory for 56 of 60 (each is a 95% interval, so some seeds miss); the Condorcet and tied designs
pass for 58 of 60, the cycle against m = 2 for 60 of 60.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command

import workers.policies as wp
from studies import reproduction
from studies.models import PolicyFit, Study

# Fresh id sequences: the items step draws from Study.seed and the ids of prompts and policies, so
# with the same ids every run builds, hands out and judges the same items.
pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)


def test_nlhf_stalls_at_alpha_while_the_multiplayer_policy_reaches_k_over_k_plus_1(live_server):
    population = reproduction.majority(0.6)
    checks = {
        kind: reproduction.run_check(
            population,
            reproduction.ReproductionDesign(prompts=16, k_values=(4,), replicates=4, annotations_per_item=3, seed=7,
                                policies=(kind,)),
            base_url=live_server.url, slug=f"majority-{kind}", concurrency=1,
        )
        for kind in ("nlhf", "multiplayer")
    }
    nlhf, multiplayer = checks["nlhf"].row("nlhf", 4), checks["multiplayer"].row("multiplayer", 4)

    # NLHF's 4 copies of a always meet the adversary b: 16 prompts x 4 replicates, 3 judgments each. The
    # multiplayer policy's draws sometimes are all the adversary's text: those items are decided, never judged.
    assert checks["nlhf"].judgments == 192
    for check in checks.values():
        assert check.judgments == 3 * check.study.items.filter(needs_judgment=True).count()
    assert nlhf.theory == pytest.approx(0.6)
    assert multiplayer.theory == pytest.approx(0.8)
    assert nlhf.low <= 0.6 <= nlhf.high  # NLHF's k copies of the majority text win only α
    assert multiplayer.low <= 0.8 <= multiplayer.high  # the equilibrium reaches k/(k+1)
    # ...and the study has the power to tell them apart.
    assert nlhf.high < 0.8
    assert multiplayer.low > 0.6
    assert all(check.passed for check in checks.values())


def test_on_the_condorcet_cycle_both_policies_are_uniform_and_reach_k_over_k_plus_1(live_server):
    check = reproduction.run_check(
        reproduction.condorcet(),
        reproduction.ReproductionDesign(prompts=6, k_values=(1, 2), replicates=1, annotations_per_item=2, seed=3),
        base_url=live_server.url, slug="condorcet", concurrency=1,
    )

    fits = PolicyFit.objects.filter(policy__study=check.study)
    assert fits.count() == 6 * 2 * 2
    for fit in fits:
        np.testing.assert_allclose(fit.probabilities, [1 / 3] * 3, atol=1e-6)
    assert {(r.policy, r.k): r.theory for r in check.rows} == {
        ("nlhf", 1): pytest.approx(0.5), ("nlhf", 2): pytest.approx(2 / 3), ("multiplayer", 1): pytest.approx(0.5), ("multiplayer", 2): pytest.approx(2 / 3),
    }
    # 6 prompts x 2 k x 2 policies x 2 opponents, 2 judgments each, less the items decided by
    # construction (every draw the same text), which nobody is asked to judge.
    decided = check.study.items.filter(needs_judgment=False).count()
    assert 0 < decided < 48
    assert check.judgments == 2 * (48 - decided)
    assert check.passed, reproduction.table([check])


def test_nlhf_theory_is_capped_by_the_copy_opponent_when_alpha_exceeds_k_over_k_plus_1():
    population = reproduction.majority(0.7)
    assert population.theory("nlhf", 1) == 0.5
    assert population.theory("nlhf", 2) == pytest.approx(2 / 3)  # copies of a against a: 2/3 < α
    assert population.theory("nlhf", 4) == pytest.approx(0.7)
    assert population.theory("multiplayer", 4) == pytest.approx(0.8)


def test_on_tied_utilities_the_theory_counts_ties_per_position():
    population = reproduction.tied()
    assert population.condorcet_winner() == 0
    assert population.theory("multiplayer", 3) == pytest.approx(0.75)
    assert population.theory("nlhf", 1) == 0.5
    # δ_a against c: a wins 2/5 outright and holds k/(k+1) of the 2/5 who tie a with c.
    assert population.theory("nlhf", 4) == pytest.approx(0.4 + 0.8 * 0.4)


def test_against_two_outputs_the_cycles_theory_is_the_worst_pair_for_the_uniform_policy():
    population = reproduction.condorcet()
    for k, expected in ((1, 5 / 18), (2, 4 / 9)):
        rate = population.theory("multiplayer", k, 2)
        assert rate == pytest.approx(expected)
        assert population.theory("nlhf", k, 2) == rate
        guaranteed, ceiling = wp.m_output_bound(k, 2)
        assert guaranteed - 1e-12 <= rate <= ceiling
    assert reproduction.parse_check("condorcet@m=2")[1] == 2
    with pytest.raises(ValueError, match="@m="):
        reproduction.parse_check("condorcet@k=2")


def test_tied_utilities_and_two_output_opponents_are_reproduced_over_http(live_server):
    tied = reproduction.run_check(
        reproduction.tied(),
        reproduction.ReproductionDesign(prompts=8, k_values=(4,), replicates=2, annotations_per_item=2, seed=5),
        base_url=live_server.url, slug="tied", concurrency=1,
    )
    cycle = reproduction.run_check(
        reproduction.condorcet(),
        reproduction.ReproductionDesign(prompts=6, k_values=(2,), replicates=2, annotations_per_item=2, seed=5,
                            opponent_outputs=2, policies=("multiplayer",)),
        base_url=live_server.url, slug="cycle-m2", concurrency=1,
    )
    assert tied.row("multiplayer", 4).theory == pytest.approx(0.8)
    assert tied.row("nlhf", 4).theory == pytest.approx(0.72)
    (row,) = cycle.rows
    assert (row.m, row.theory) == (2, pytest.approx(4 / 9))
    # The adversary fields the worst pair: two distinct texts in every adversary item.
    for item in cycle.study.items.filter(opponent_label="adversary"):
        assert len(set(item.draw["opponent"])) == 2
    assert tied.passed, reproduction.table([tied])
    assert cycle.passed, reproduction.table([cycle])


def test_the_command_prints_the_table_and_removes_its_studies(capsys):
    call_command("reproduce_theory", "--population", "condorcet", "--prompts", "2", "--k", "1",
                 "--replicates", "1", "--annotations", "1", "--concurrency", "1")

    out = capsys.readouterr().out
    assert "| condorcet | nlhf | 1 | 1 |" in out
    assert "| condorcet | multiplayer | 1 | 1 |" in out
    assert "Every interval covers the theory." in out
    assert not Study.objects.exists()


def test_the_command_rejects_an_unknown_population():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="unknown population"):
        call_command("reproduce_theory", "--population", "plurality")
