""""Generate only" runs just the pool step and leaves the study a draft, so a utilities-CSV study
needs one press of Prepare after the upload."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from studies import services
from studies.models import Candidate, Job, Study
from studies.tasks import (
    build_items,
    build_populations,
    fit_policies,
    generate_candidates,
)
from tests.factories import make_generator, make_prompt, make_study
from tests.pipeline import csv_for, pipeline_csv_study

pytestmark = pytest.mark.django_db


def test_generate_only_samples_the_pool_and_one_prepare_after_the_upload_finishes_the_study(
    researcher_client, tiny_model, django_capture_on_commit_callbacks
):
    study = pipeline_csv_study(tiny_model)
    assert 'id="generate-only"' in researcher_client.get(
        reverse("admin:studies_study_change", args=[study.pk])).content.decode()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = researcher_client.post(reverse("admin:studies_study_generate", args=[study.pk]))

    assert response["Location"] == reverse("admin:studies_study_jobs", args=[study.pk])
    assert len(callbacks) == 1
    parent = Job.objects.get(study=study, kind=Job.Kind.PREPARE)
    assert [s.kind for s in parent.steps.all()] == [Job.Kind.GENERATE]
    generate_candidates(parent.steps.get().pk)
    parent.refresh_from_db()
    study.refresh_from_db()
    assert parent.status == Job.Status.DONE
    assert study.status == Study.Status.DRAFT  # still a draft: the utilities come next
    assert Candidate.objects.filter(prompt__study=study).count() > 0

    source = study.preference_sources.get()
    source.data = csv_for(study)
    source.save()
    again = services.prepare_study(study=study)  # the one press after the upload
    for kind, task in [("generate", generate_candidates), ("populate", build_populations), ("fit", fit_policies),
                       ("build_items", build_items)]:
        task(again.steps.get(kind=kind).pk)
    study.refresh_from_db()
    assert study.status == Study.Status.READY
    assert again.steps.get(kind="generate").result["pools_skipped"] == 2


def test_generate_only_needs_a_draft_with_a_generator(researcher_client):
    no_generator = make_study()
    make_prompt(study=no_generator)
    ready = make_study(generator=make_generator(), status=Study.Status.READY)

    for study, problem in [(no_generator, "samples with the study's generator"), (ready, "runs on a draft study")]:
        with pytest.raises(services.PreparationError, match=problem):
            services.generate_only(study=study)
        response = researcher_client.post(reverse("admin:studies_study_generate", args=[study.pk]), follow=True)
        assert html.escape(problem) in response.content.decode()
    assert not Job.objects.exists()
