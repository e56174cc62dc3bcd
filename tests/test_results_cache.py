"""The results page is served from a snapshot until new judgments arrive (issue #14)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies import tasks
from studies.estimate import results_cache
from studies.models import ResultsSnapshot, Study
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)
from tests.judgments import make_judgment

pytestmark = pytest.mark.django_db


def study_with_one_judged_item(n_judgments: int = 3) -> Study:
    """A live study with one item, judged `n_judgments` times (not the `judged_study` fixture)."""
    study = make_study(status=Study.Status.LIVE)
    policy = make_policy(study=study)
    item = make_item(study=study, prompt=make_prompt(study=study), policy=policy, texts=["a", "b"],
                     counts=[(1, 0), (0, 1)], k=1)  # fmt: skip
    for _ in range(n_judgments):
        make_judgment(item=item, participant=make_participant(study=study), pick=0)
    return study


def add_judgment(study: Study) -> None:
    make_judgment(item=study.items.first(), participant=make_participant(study=study), pick=1)


def results_page(client, study: Study, **headers):
    return client.get(reverse("studies:results", args=[study.slug]), headers=headers)


def snapshot(study: Study) -> ResultsSnapshot:
    return ResultsSnapshot.objects.get(study=study, origin="real")


def test_a_small_study_is_computed_once_then_served_from_its_snapshot_until_a_judgment_arrives(researcher_client):
    study = study_with_one_judged_item(3)
    assert b"3 judgments" in results_page(researcher_client, study).content
    first = snapshot(study).computed_at
    assert b"up to date" in results_page(researcher_client, study, **{"HX-Request": "true"}).content
    assert snapshot(study).computed_at == first  # the poll read the snapshot
    add_judgment(study)
    page = results_page(researcher_client, study).content
    assert b"4 judgments" in page  # small: recomputed inside the request
    assert snapshot(study).computed_at > first


def test_a_change_of_the_study_makes_its_snapshot_out_of_date(researcher_client):
    study = study_with_one_judged_item(2)
    results_page(researcher_client, study)
    first = snapshot(study).computed_at
    study.cant_decide_analysis = Study.CantDecide.TIE
    study.save()
    results_page(researcher_client, study)
    assert snapshot(study).computed_at > first


def test_a_large_study_shows_its_last_snapshot_and_queues_one_recomputation(
    researcher_client, settings, django_capture_on_commit_callbacks
):
    study = study_with_one_judged_item(3)
    results_cache.compute_and_store(study, "real")
    settings.UALIGN_RESULTS_INLINE_MAX_JUDGMENTS = 2  # from now on too many to compute in a request
    add_judgment(study)
    add_judgment(study)
    with django_capture_on_commit_callbacks() as callbacks:
        first = results_page(researcher_client, study).content
        poll = results_page(researcher_client, study, **{"HX-Request": "true"}).content
    assert b"3 judgments" in first  # the last snapshot, not recomputed
    assert b"3 judgments" in poll
    assert b"2 new judgments since" in poll
    assert b"recomputing in the background" in poll
    assert len(callbacks) == 1  # one recomputation queued for both requests

    tasks.refresh_results(study.pk, "real")  # what the worker runs

    page = results_page(researcher_client, study).content
    assert b"5 judgments" in page
    assert b"up to date" in page


def test_a_large_study_without_a_snapshot_says_its_results_are_being_computed(
    researcher_client, settings, django_capture_on_commit_callbacks
):
    study = study_with_one_judged_item(3)
    settings.UALIGN_RESULTS_INLINE_MAX_JUDGMENTS = 2
    with django_capture_on_commit_callbacks() as callbacks:
        page = results_page(researcher_client, study)
    assert page.status_code == 200
    assert b"Computing the results in the background" in page.content
    assert len(callbacks) == 1
    plot = researcher_client.get(reverse("studies:results_plot", args=[study.slug]))
    assert plot.status_code == 200


def test_an_older_computation_never_replaces_a_newer_snapshot():
    study = study_with_one_judged_item(2)
    results_cache.compute_and_store(study, "real")
    newer = snapshot(study)
    ResultsSnapshot.objects.filter(pk=newer.pk).update(judgment_watermark=newer.judgment_watermark + 10**6)
    results_cache.compute_and_store(study, "real")  # began with a lower watermark
    assert snapshot(study).computed_at == newer.computed_at
