"""The demo's pilot answers its pre-registered question before its end (issue #22): with the real SmolLM2,
"Pilot with simulated annotators" fills a pilot copy; the run checks the pilot's question as it goes, so the
pilot's results page shows the answer and the judgments a stop there would have saved. Slow: the demo's
preparation (about 95 CPU-seconds) and about 2,800 judgments through the real pages."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies import demo, services
from studies.estimate import plans
from studies.estimate import question as live
from studies.models import Job, Judgment, Study, StudyQuestion
from studies.tasks import (
    build_items,
    build_populations,
    fit_policies,
    generate_candidates,
    simulate_annotators,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(2400)]


def test_the_demo_pilot_answers_its_question_and_shows_the_saving(live_server, settings, monkeypatch,
                                                                   researcher_client):
    monkeypatch.delenv("UALIGN_DEMO_MODEL", raising=False)
    settings.SITE_URL = live_server.url
    study = demo.ensure_demo_study()
    parent = services.prepare_study(study=study)
    for kind, task in [(Job.Kind.GENERATE, generate_candidates), (Job.Kind.POPULATE, build_populations),
                       (Job.Kind.FIT, fit_policies), (Job.Kind.BUILD_ITEMS, build_items)]:
        task(parent.steps.get(kind=kind).pk)
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    services.change_study_status(study=study, action="go-live")

    job = services.start_pilot(study=study)  # what the study page's pilot button does
    simulate_annotators(job.pk)

    job.refresh_from_db()
    pilot = job.study
    record = StudyQuestion.objects.get(study=pilot)
    planned = plans.design_fit(pilot).judgments
    judged = Judgment.objects.filter(assignment__item__study=pilot).count()
    now = live.evaluate(record)
    print(f"demo pilot now: {now.answer!r} {now.sentence} {now.readings}")
    other = StudyQuestion(study=pilot, kind="threshold", policy=pilot.policies.get(name="multiplayer"), k=8,
                          threshold=0.5)
    print(f"demo pilot, multiplayer ≥ ½ at the end: {live.evaluate(other).sentence}")
    print(f"demo pilot: answered {record.answer!r} after {record.answered_judgments} of {judged} judgments "
          f"(planned {planned}): {record.answer_text}")
    assert job.status == Job.Status.DONE, job.error
    assert record.answer == "no"
    assert record.answered_judgments < planned
    html = researcher_client.get(reverse("studies:results", args=[pilot.slug]) + "?source=simulated").content.decode()
    assert "Answered." in html
    assert live.saving(record).sentence.replace("'", "&#x27;") in html
