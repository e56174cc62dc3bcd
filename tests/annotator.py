"""The annotator's path through Django's test client (join, consent, start), shared by the tests
of the annotator's pages (tests/test_views_annotate.py, test_lifecycle.py, test_participants.py, ...).

The study they join is built by `tests.factories.make_live_study`.
"""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from studies.models import Assignment, Participant, Study

HX = {"HX-Request": "true"}


def url(name: str, study: Study) -> str:
    return reverse(f"studies:{name}", args=[study.slug])


def join(client: Client, study: Study, **params) -> Participant:
    """Open the study link (the landing page), then press Start (the join POST)."""
    params = {"invite": study.invite_token, **params}
    landing = client.get(url("join", study), params)
    assert landing.status_code == 200
    response = client.post(url("join", study), {**params, "csrfmiddlewaretoken": str(landing.context["csrf_token"])})
    assert response.status_code == 200  # the consent page in the join's answer, naming its own URL
    assert f'<link rel="canonical" href="{url("consent", study)}">' in response.content.decode()
    return Participant.objects.filter(study=study).latest("id")


def start(client: Client, study: Study, **params) -> Participant:
    participant = join(client, study, **params)
    client.post(url("consent", study), {"decision": "accept"})
    client.post(url("instructions", study))
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ACTIVE
    return participant


def open_assignment(participant: Participant) -> Assignment:
    return participant.assignments.get(status=Assignment.Status.ASSIGNED)
