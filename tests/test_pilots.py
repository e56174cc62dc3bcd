"""A pilot with simulated annotators runs on a throwaway copy: the real study's quota, participants
and judgments are untouched, and the copy is marked, closed to people and deletable."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from studies import services
from studies.estimate.results import compute_results
from studies.judgment import assign, flow
from studies.judgment.flow import StudyUnavailable, join_study
from studies.models import (
    Assignment,
    ComparisonItem,
    Job,
    Judgment,
    Participant,
    PolicyFit,
    Study,
)
from studies.simulated_annotators import annotators_to_fill
from studies.tasks import simulate_annotators
from tests.csv_study import csv_study, prepare, snapshot


def prepared_study(status=Study.Status.LIVE, **overrides) -> Study:
    study, prompts = csv_study(annotations_per_item=2, items_per_participant=4, **overrides)
    prepare(study, prompts)
    Study.objects.filter(pk=study.pk).update(status=status)
    study.refresh_from_db()
    return study


def real_record(study: Study) -> tuple:
    """Everything a pilot must not change about the real study."""
    study.refresh_from_db()
    return (
        study.status,
        Participant.objects.filter(study=study).count(),
        Assignment.objects.filter(item__study=study).count(),
        Judgment.objects.filter(assignment__item__study=study).count(),
        annotators_to_fill(study),
        snapshot(study),
    )


@pytest.mark.django_db
def test_the_pilot_button_copies_the_study_queues_annotators_on_the_copy_and_opens_its_results(
    researcher_client, django_capture_on_commit_callbacks
):
    study = prepared_study(status=Study.Status.READY)
    before = real_record(study)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = researcher_client.post(reverse("admin:studies_study_pilot", args=[study.pk]))

    pilot = Study.objects.get(pilot_of=study)
    assert response.status_code == 302
    assert response["Location"] == reverse("studies:results", args=[pilot.slug]) + "?source=simulated"
    job = Job.objects.get(kind=Job.Kind.SIMULATE)
    assert job.study == pilot
    assert job.status == Job.Status.QUEUED
    assert job.params["annotators"] == annotators_to_fill(pilot) > 0
    assert len(callbacks) == 1
    assert pilot.is_pilot
    assert pilot.status == Study.Status.LIVE
    assert pilot.invite_token != study.invite_token
    # The same items: the same shown texts (the original's candidates) with the same counts.
    assert snapshot(pilot) != []
    assert [row[6:] for row in snapshot(pilot)] == [row[6:] for row in snapshot(study)]
    assert ComparisonItem.objects.filter(study=pilot).count() == ComparisonItem.objects.filter(study=study).count()
    assert PolicyFit.objects.filter(policy__study=pilot).count() == PolicyFit.objects.filter(policy__study=study).count()
    assert real_record(study) == before


@pytest.mark.django_db(transaction=True)
def test_simulated_annotators_fill_the_pilot_and_the_real_study_keeps_its_quota_then_the_pilot_is_deleted(
    live_server, settings, researcher_client
):
    settings.SITE_URL = live_server.url
    study = prepared_study()
    before = real_record(study)
    pilot = services.create_pilot(study=study)
    job = Job.objects.create(study=pilot, kind=Job.Kind.SIMULATE, params={"annotators": annotators_to_fill(pilot)})

    simulate_annotators(job.pk)

    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.error
    assert job.result["judgments"] > 0
    assert Judgment.objects.filter(assignment__item__study=pilot).count() == job.result["judgments"]
    assert annotators_to_fill(pilot) < annotators_to_fill(study)
    assert real_record(study) == before
    results = compute_results(pilot, origin="simulated")
    assert results.n_judgments == job.result["judgments"]
    assert results.cells
    assert researcher_client.get(reverse("studies:results", args=[pilot.slug])).status_code == 200

    response = researcher_client.post(reverse("admin:studies_study_delete_pilot", args=[pilot.pk]))

    assert response["Location"] == reverse("admin:studies_study_change", args=[study.pk])
    assert not Study.objects.filter(pk=pilot.pk).exists()
    assert not Participant.objects.filter(study_id=pilot.pk).exists()
    assert real_record(study) == before


@pytest.mark.django_db
def test_people_cannot_join_a_pilot_copy(client):
    study = prepared_study()
    pilot = services.create_pilot(study=study)

    response = client.get(f"{pilot.participant_link()}&PROLIFIC_PID=someone")

    assert response.status_code == 404
    with pytest.raises(StudyUnavailable):
        join_study(study=pilot, prolific_pid="someone")
    assert not Participant.objects.filter(study=pilot).exists()
    assert join_study(study=pilot, prolific_pid="sim-1", is_simulated=True).study == pilot


@pytest.mark.django_db
def test_a_study_without_items_or_a_pilot_itself_is_not_piloted(researcher_client):
    draft, _ = csv_study()
    study = prepared_study()
    pilot = services.create_pilot(study=study)

    for target in (draft, pilot):
        response = researcher_client.post(reverse("admin:studies_study_pilot", args=[target.pk]), follow=True)
        assert "No pilot for" in response.content.decode()
    assert Study.objects.filter(pilot_of__isnull=False).count() == 1
    with pytest.raises(services.PilotError):
        services.delete_pilot(pilot=study)


@pytest.mark.django_db
def test_the_study_page_offers_the_pilot_button_and_lists_its_pilots(researcher_client):
    study = prepared_study(status=Study.Status.READY)
    pilot = services.create_pilot(study=study)

    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    pilot_page = researcher_client.get(reverse("admin:studies_study_change", args=[pilot.pk])).content.decode()

    assert 'id="pilot-study"' in page
    assert pilot.slug in page
    assert 'id="delete-pilot"' in pilot_page
    assert "Pilot copy" in pilot_page
    assert 'id="pilot-study"' not in pilot_page


@pytest.mark.django_db(transaction=True)
def test_the_command_pilots_on_a_copy_and_points_at_the_pilots_results(live_server, capsys):
    study = prepared_study()
    before = real_record(study)

    call_command("simulate_annotators", study.slug, "--pilot", "-n", "2", "--base-url", live_server.url)

    pilot = Study.objects.get(pilot_of=study)
    out = capsys.readouterr().out
    assert f"Pilot copy {pilot.slug!r}" in out
    assert f"/research/{pilot.slug}/results/?source=simulated" in out
    assert Participant.objects.filter(study=pilot, is_simulated=True).count() == 2
    assert real_record(study) == before


@pytest.mark.django_db
def test_a_pilot_copys_items_start_with_no_live_assignments_and_their_own_shuffle_keys():
    study = prepared_study()
    person = flow.join_study(study=study, prolific_pid="PID-1")
    flow.record_consent(participant=person, accepted=True)
    flow.start_tasks(participant=person)
    taken = assign.assign_next_item(participant=person)
    assert ComparisonItem.objects.get(pk=taken.item_id).live_assignments == 1

    pilot = services.create_pilot(study=study)

    copies = list(ComparisonItem.objects.filter(study=pilot))
    assert len(copies) == ComparisonItem.objects.filter(study=study).count()
    assert all(item.live_assignments == 0 and item.rotation_use == {} for item in copies)
    assert len({item.spread for item in copies}) > 1  # a key per item, not one shared default
