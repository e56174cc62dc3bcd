"""Smaller ones of #25: the consent page shows one time (the researcher's when their text gives
one), and the study form's "Allow cant decide" reads as the button it shows."""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies.duration import states_duration
from tests.annotator import join, url
from tests.factories import make_live_study

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("text", ["It takes about 10 minutes.", "Allow 5-8 min.", "This takes half an hour.",
                                  "About 1 hour in all."])  # fmt: skip
def test_a_stated_time_is_recognised(text):
    assert states_duration(text)


@pytest.mark.parametrize("text", ["", "You will compare answers.", "Minutes of the meeting are kept.",
                                  "We pay per hour of work"])  # fmt: skip
def test_text_without_a_time_is_not(text):
    assert not states_duration(text)


def test_the_consent_page_shows_the_researchers_time_alone(client):
    study = make_live_study(consent_text="This study takes about 12 minutes.")
    join(client, study)
    page = client.get(url("consent", study)).content.decode()
    assert "about 12 minutes" in page
    assert 'id="estimated-duration"' not in page


def test_without_a_stated_time_the_consent_page_gives_its_estimate(client):
    study = make_live_study(consent_text="You will compare answers.")
    join(client, study)
    assert 'id="estimated-duration"' in client.get(url("consent", study)).content.decode()


def test_the_study_form_names_the_cant_decide_button(researcher_client):
    study = make_live_study()
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert "I can&#x27;t decide" in page or "I can't decide" in page
    assert "Allow cant decide" not in page
