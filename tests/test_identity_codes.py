"""Per-participant completion codes (issue #24, finding 1): the study-wide code could be farmed
(one join, one pick, the code that pays everyone). With `Study.per_participant_codes` each
participant gets their own (an HMAC of their pseudonym under the study's secret), shown on their
done page, and the approve/reject export says which code each should have submitted."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client
from django.urls import reverse

from studies import services
from studies.models import Participant, Study
from tests.annotator import open_assignment, start, url
from tests.factories import make_live_study

pytestmark = pytest.mark.django_db


def _finish(client: Client, study: Study) -> Participant:
    participant = start(client, study)
    for _ in range(study.items_per_participant):
        client.get(url("task", study))
        client.post(url("submit_judgment", study), {"assignment": open_assignment(participant).pk, "choice": 1})
    participant.refresh_from_db()
    assert participant.status == Participant.Status.COMPLETED
    return participant


def test_each_participant_gets_their_own_code_on_the_done_page():
    study = make_live_study(n_items=4, items_per_participant=2, per_participant_codes=True, completion_code="SHARED")
    browsers = [Client(), Client()]
    people = [_finish(browser, study) for browser in browsers]
    codes = [p.completion_code for p in people]
    assert codes[0] != codes[1]
    assert "SHARED" not in codes
    assert codes == [study.completion_code_for(p) for p in people]
    for browser, code in zip(browsers, codes, strict=True):
        done = browser.get(url("done", study)).content.decode()
        assert code in done
        assert "SHARED" not in done


def test_the_study_code_stays_the_default():
    study = make_live_study(n_items=4, items_per_participant=1, completion_code="SHARED")
    assert _finish(Client(), study).completion_code == "SHARED"


def test_the_code_depends_on_the_studys_secret():
    study = make_live_study(per_participant_codes=True)
    person = start(Client(), study)
    code = study.completion_code_for(person)
    study.code_secret = "another secret"
    assert study.completion_code_for(person) != code


def test_closing_gives_everyone_who_worked_their_own_code():
    study = make_live_study(n_items=4, items_per_participant=3, per_participant_codes=True, completion_code="SHARED")
    people = []
    for _ in range(2):
        browser = Client()
        person = start(browser, study)
        browser.get(url("task", study))
        browser.post(url("submit_judgment", study), {"assignment": open_assignment(person).pk, "choice": 1})
        people.append(person)
    services.change_study_status(study=study, action="close")
    for person in people:
        person.refresh_from_db()
        assert person.status == Participant.Status.COMPLETED
        assert person.completion_code == study.completion_code_for(person)
    assert people[0].completion_code != people[1].completion_code


def test_the_review_export_says_which_code_each_participant_should_have(researcher_client):
    study = make_live_study(n_items=4, items_per_participant=1, per_participant_codes=True)
    honest = _finish(Client(), study)
    forged = _finish(Client(), study)
    Participant.objects.filter(pk=forged.pk).update(completion_code=honest.completion_code)  # not theirs
    response = researcher_client.post(reverse("admin:studies_participant_changelist"),
                                      {"action": "export_review_list", "_selected_action": [honest.pk, forged.pk]})
    rows = {r["participant"]: r for r in csv.DictReader(io.StringIO(response.content.decode()))}
    assert rows[honest.pseudonym]["expected_code"] == honest.completion_code
    assert rows[honest.pseudonym]["code_ok"] == "true"
    assert rows[forged.pseudonym]["expected_code"] == study.completion_code_for(forged)
    assert rows[forged.pseudonym]["code_ok"] == "false"
