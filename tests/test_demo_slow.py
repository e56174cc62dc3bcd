"""The demo shows its finding (issue #16.3): with the real SmolLM2, after one fill of simulated annotators,
the results tell multiplayer from NLHF at the largest k. Slow: about 95 CPU-seconds of preparation and
2,800 judgments through the real pages (README, "The demo's design")."""

from __future__ import annotations

import pytest

from studies import demo, services
from studies.estimate.results import compute_results
from studies.models import Job, Study
from studies.simulated_annotators import annotators_to_fill, simulate_annotators
from studies.tasks import (
    build_items,
    build_populations,
    fit_policies,
    generate_candidates,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _prepare(study: Study) -> None:
    parent = services.prepare_study(study=study)
    for kind, task in [(Job.Kind.GENERATE, generate_candidates), (Job.Kind.POPULATE, build_populations),
                       (Job.Kind.FIT, fit_policies), (Job.Kind.BUILD_ITEMS, build_items)]:
        task(parent.steps.get(kind=kind).pk)
    study.refresh_from_db()
    assert study.status == Study.Status.READY, parent.steps.exclude(status="done").values_list("error", flat=True)


def test_after_one_fill_the_demo_tells_multiplayer_from_nlhf_at_the_largest_k(live_server, monkeypatch):
    monkeypatch.delenv("UALIGN_DEMO_MODEL", raising=False)
    study = demo.ensure_demo_study()
    _prepare(study)
    study.move_to(Study.Status.LIVE)

    # What "Run simulated annotators" does: fill the remaining quota, with the study's seed.
    report = simulate_annotators(study, annotators=annotators_to_fill(study), base_url=live_server.url,
                                 seed=study.seed)
    assert report.count("completed") == len(report.annotators)

    results = compute_results(study, origin="simulated")
    largest = max(study.k_values)
    cells = {c.policy: c for c in results.cells if c.k == largest and c.opponent == "adversary"}
    multiplayer, nlhf = cells["multiplayer"], cells["nlhf"]
    # The population model's prediction: NLHF collapses onto the majority's favourite, the
    # k-sample equilibrium reaches about k/(k+1) on the responses it was fitted on (its
    # certificate); against the worst of all responses, held-out ones included (what the
    # adversary items show), it keeps a clear lead.
    robust = {r.policy: r for r in results.robust if r.k == largest and r.m == 1}
    assert robust["multiplayer"].predicted_pool > largest / (largest + 1) - 0.02
    assert nlhf.predicted < 0.65
    assert multiplayer.predicted > nlhf.predicted + 0.15
    # And the judgments say so: the two headline intervals do not overlap.
    assert nlhf.interval.high < multiplayer.interval.low, (nlhf.interval, multiplayer.interval)
