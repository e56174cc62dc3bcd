"""Simulated annotators go through the real participant flow over HTTP (live_server) and choose by a population."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from studies import services, simulated_annotators
from studies.estimate.results import compute_results
from studies.models import (
    Candidate,
    ComparisonItem,
    ItemCandidate,
    Job,
    Judgment,
    Participant,
    Policy,
    Study,
)
from studies.steps.population import save_population
from studies.tasks import simulate_annotators
from tests.factories import (
    make_candidate,
    make_generator,
    make_item,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db(transaction=True)

PREFERRED, OTHER = "The answer everyone prefers.", "The answer nobody prefers."


def unanimous_study(slug: str = "sim", *, prompts: int = 2, items_per_prompt: int = 2, annotations: int = 2,
                    per_person: int = 4, attention: bool = False) -> Study:
    """A live study whose every item shows both texts, and whose one-type population prefers PREFERRED."""
    generator = make_generator()
    study = make_study(slug=slug, generator=generator, status=Study.Status.LIVE, k_values=[1],
                       annotations_per_item=annotations, items_per_participant=per_person, attention_check_rate=0.25)
    policy = make_policy(study=study, kind=Policy.Kind.MULTIPLAYER)
    for i in range(prompts):
        prompt = make_prompt(study=study, external_id=f"p{i}")
        for r in range(items_per_prompt):
            make_item(study=study, prompt=prompt, policy=policy, texts=[OTHER, PREFERRED], counts=[(1, 0), (0, 1)],
                      k=1, replicate=r)
        candidates = [Candidate.objects.get(prompt=prompt, text=t) for t in (OTHER, PREFERRED)]
        save_population(prompt, candidates, np.array([[0.0, 1.0]]), np.array([1.0]), ["everyone"], {})
        if attention:  # as the pipeline builds them: pool texts plus one broken text outside the population
            item = ComparisonItem.objects.create(study=study, prompt=prompt, k=2, m=1, opponent_label="attention",
                                                 is_attention_check=True)
            broken = make_candidate(prompt=prompt, generator=None, sample_index=-1, text="Tea the of sideways",
                                    is_attention_check=True)
            for slot, (candidate, c_a, c_b) in enumerate([(candidates[0], 1, 0), (broken, 0, 1), (candidates[1], 1, 0)]):
                ItemCandidate.objects.create(item=item, candidate=candidate, slot=slot, count_policy=c_a, count_opponent=c_b)
    return study


def population_file(study: Study, utility: dict[str, float]) -> str:
    """One type, "contrarian", scoring each prompt's texts by `utility[text]`, candidates named by id."""
    rows = [f"contrarian,{c.pk},{utility[c.text]}"
            for c in Candidate.objects.filter(prompt__study=study, is_attention_check=False).order_by("id")]
    return "\n".join(["type,candidate_id,utility", *rows]) + "\n"


def chosen_texts(study: Study) -> list[str]:
    return list(
        Judgment.objects.filter(assignment__item__study=study, assignment__item__is_attention_check=False)
        .values_list("chosen__candidate__text", flat=True)
    )


def test_simulated_annotators_complete_the_study_over_http_and_are_marked_simulated(live_server):
    study = unanimous_study()
    report = simulated_annotators.simulate_annotators(study, annotators=3, base_url=live_server.url)

    participants = list(Participant.objects.filter(study=study))
    assert len(participants) == 2  # 4 items x 2 annotations / 4 per person; the third was turned away
    assert [a.status for a in report.annotators] == ["completed", "completed", "refused"]
    assert all(p.is_simulated and p.status == Participant.Status.COMPLETED for p in participants)
    assert all(p.external_id.startswith("sim-") for p in participants)
    assert {a.completion_code for a in report.annotators[:2]} == {study.completion_code}
    assert report.judgments == 8 == Judgment.objects.filter(assignment__item__study=study).count()
    # Every item is shown in rotated orders; they always found the preferred text wherever it was.
    assert set(chosen_texts(study)) == {PREFERRED}
    assert compute_results(study, origin="real").n_judgments == 0
    assert compute_results(study, origin="simulated").n_judgments == 8


def test_a_population_file_replaces_the_studys_own_population(live_server):
    study = unanimous_study()
    csv = population_file(study, {OTHER: 5, PREFERRED: 1})

    simulated_annotators.simulate_annotators(study, annotators=2, base_url=live_server.url, population_csv=csv)

    assert set(chosen_texts(study)) == {OTHER}


def test_a_bad_population_file_is_refused_before_anyone_joins(live_server):
    study = unanimous_study()
    preferred = Candidate.objects.filter(prompt__study=study, text=PREFERRED).order_by("id")
    csv = "type,candidate_id,utility\n" + "".join(f"t,{c.pk},1\n" for c in preferred)  # no row for OTHER

    with pytest.raises(simulated_annotators.SimulationError, match=r"population file: line 2: type 't' has no utility for candidate"):
        simulated_annotators.simulate_annotators(study, annotators=1, base_url=live_server.url, population_csv=csv)
    assert not Participant.objects.filter(study=study).exists()


def test_luce_noise_makes_annotators_sometimes_choose_the_worse_text(live_server):
    study = unanimous_study(prompts=3, annotations=4, per_person=6)

    simulated_annotators.simulate_annotators(study, annotators=4, base_url=live_server.url, luce_temperature=2.0, concurrency=2)

    texts = chosen_texts(study)
    assert len(texts) == 24
    # P(the worse text) = 1 / (1 + e^0.5) ≈ 0.38 per pick; all 24 preferred has probability < 1e-4.
    assert 0 < texts.count(OTHER) < 24


def test_noiseless_annotators_pass_every_attention_check(live_server):
    study = unanimous_study(attention=True, per_person=6)

    simulated_annotators.simulate_annotators(study, annotators=2, base_url=live_server.url)

    checks = Judgment.objects.filter(assignment__item__study=study, assignment__item__is_attention_check=True)
    assert checks.exists()
    assert all(checks.values_list("attention_passed", flat=True))


def test_a_study_that_is_not_live_gets_no_simulated_annotators(live_server):
    study = unanimous_study()
    study.move_to(Study.Status.CLOSED)

    with pytest.raises(simulated_annotators.SimulationError, match="live"):
        simulated_annotators.simulate_annotators(study, annotators=1, base_url=live_server.url)
    with pytest.raises(simulated_annotators.SimulationError, match="make it live"):
        services.start_simulation(study=study)
    assert not Participant.objects.filter(study=study).exists()


@pytest.mark.django_db  # not transactional, so the enqueue waits for a commit that the capture intercepts
def test_the_admin_action_queues_a_simulation_job_for_the_worker(researcher_client, django_capture_on_commit_callbacks):
    study, closed = unanimous_study(), unanimous_study(slug="closed")
    closed.move_to(Study.Status.CLOSED)
    url = reverse("admin:studies_study_changelist")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = researcher_client.post(
            url, {"action": "run_simulated_annotators", "_selected_action": [study.pk, closed.pk]}, follow=True
        )

    job = Job.objects.get(kind=Job.Kind.SIMULATE)
    assert job.study == study
    assert job.status == Job.Status.QUEUED
    assert job.params == {"annotators": 2, "luce_temperature": None, "seed": study.seed}
    assert len(callbacks) == 1  # one task enqueued on commit, for the live study only
    text = response.content.decode()
    assert "Queued 2 simulated annotators" in text
    assert "make it live first" in text


def test_the_simulate_task_runs_the_job_against_the_site_url(live_server, settings):
    settings.SITE_URL = live_server.url
    study = unanimous_study()
    job = Job.objects.create(study=study, kind=Job.Kind.SIMULATE, params={"annotators": 2, "seed": 3})

    simulate_annotators(job.pk)
    simulate_annotators(job.pk)  # a second delivery finds the job done and does nothing

    job.refresh_from_db()
    assert job.status == Job.Status.DONE
    assert job.result["judgments"] == 8
    assert job.result["statuses"] == {"completed": 2}
    assert Participant.objects.filter(study=study, is_simulated=True).count() == 2


def test_the_command_runs_annotators_and_points_at_the_results(live_server, tmp_path, capsys):
    study = unanimous_study()
    population = tmp_path / "population.csv"
    population.write_text(population_file(study, {OTHER: 1, PREFERRED: 0}))

    call_command("simulate_annotators", study.slug, "-n", "2", "--population", str(population),
                 "--base-url", live_server.url)

    out = capsys.readouterr().out
    assert "2 simulated annotators (2 completed) made 8 judgments" in out
    assert f"/research/{study.slug}/results/?source=simulated" in out
    assert set(chosen_texts(study)) == {OTHER}
