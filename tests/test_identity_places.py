"""Identity of a place (issue #24, finding 1): places can't be farmed without an identity.

The attack: the study's key is in every participant's URL and a PID was optional, so from one
address three joins with no PID took all three places, each earned the code, and a real Prolific
participant then saw "This study is full". The defences, by recruitment mode
(docs/security.md, "Recruitment modes"): a Prolific study needs a well-formed PROLIFIC_PID; a lab
study can hand out single-use invite links instead of the shared key.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from studies.judgment import flow
from studies.models import Invite, Participant, Study
from tests.annotator import start, url
from tests.factories import make_live_study

pytestmark = pytest.mark.django_db

PID = "5f1a2b3c4d5e6f7a8b9c0d1e"


def _post_join(client: Client, study: Study, **params):
    landing = client.get(url("join", study), params)
    token = landing.context["csrf_token"] if landing.context and "csrf_token" in landing.context else ""
    return landing, client.post(url("join", study), {**params, "csrfmiddlewaretoken": str(token)})


# --- Prolific -------------------------------------------------------------------------------------


def test_the_farming_attack_on_a_prolific_study_takes_no_place_and_a_real_participant_joins():
    study = make_live_study(n_items=6, max_participants=3, recruitment=Study.Recruitment.PROLIFIC)
    for _ in range(3):  # the reported attack: three joins without a PID, from one address
        landing, joined = _post_join(Client(), study, invite=study.invite_token)
        assert landing.status_code == 400
        assert joined.status_code == 400
        assert b"PROLIFIC_PID, 24 hexadecimal characters" in joined.content
    assert not Participant.objects.filter(study=study).exists()

    start(Client(), study, PROLIFIC_PID=PID)  # a real Prolific participant finds a place
    assert Participant.objects.get(study=study).external_id == PID


@pytest.mark.parametrize("pid", ["abc", "5f1a2b3c4d5e6f7a8b9c0d1", "5f1a2b3c4d5e6f7a8b9c0d1e0", "5f1a2b3c4d5e6f7a8b9c0d1g",
                                 "participant-1234567890123", "5f1a2b3c:d5e6f7a8b9c0d1e"])
def test_a_prolific_study_refuses_a_malformed_pid(client, pid):
    study = make_live_study(recruitment=Study.Recruitment.PROLIFIC)
    _, joined = _post_join(client, study, invite=study.invite_token, PROLIFIC_PID=pid)
    assert joined.status_code == 400
    assert not Participant.objects.filter(study=study).exists()


def test_a_prolific_pid_in_other_case_is_the_same_person():
    study = make_live_study(recruitment=Study.Recruitment.PROLIFIC)
    start(Client(), study, PROLIFIC_PID=PID)
    _, again = _post_join(Client(), study, invite=study.invite_token, PROLIFIC_PID=PID.upper())
    assert again.status_code == 403
    assert b"another browser" in again.content
    assert Participant.objects.filter(study=study).count() == 1


def test_a_prolific_link_still_needs_the_studys_key(client):
    study = make_live_study(recruitment=Study.Recruitment.PROLIFIC)
    _, joined = _post_join(client, study, invite="wrong", PROLIFIC_PID=PID)
    assert joined.status_code == 403
    assert b"missing the study&#x27;s key" in joined.content or b"missing the study's key" in joined.content
    assert not Participant.objects.exists()


def test_a_shared_link_study_keeps_joining_without_a_pid(client):
    study = make_live_study()
    assert study.recruitment == Study.Recruitment.SHARED_LINK
    start(client, study)
    assert Participant.objects.filter(study=study, external_id="").count() == 1


def test_the_service_refuses_a_prolific_join_without_a_pid_but_not_the_servers_own_joins():
    study = make_live_study(recruitment=Study.Recruitment.PROLIFIC)
    with pytest.raises(flow.LinkRefused):
        flow.join_study(study=study, invite=study.invite_token, client_key="c")
    flow.join_study(study=study, prolific_pid="sim-1", is_simulated=True)  # simulated annotators: no link
    assert Participant.objects.filter(study=study).count() == 1


# --- Single-use invites ---------------------------------------------------------------------------


def _invite_study(**overrides) -> tuple[Study, list[Invite]]:
    study = make_live_study(n_items=6, recruitment=Study.Recruitment.INVITES, **overrides)
    return study, flow.create_invites(study=study, count=3, label="volunteer")


def test_an_invite_takes_one_place_and_refuses_a_second_browser():
    study, invites = _invite_study()
    first = Client()
    _, joined = _post_join(first, study, invite=invites[0].token)
    assert joined.status_code == 200  # the consent page
    participant = Participant.objects.get(study=study)
    invites[0].refresh_from_db()
    assert invites[0].used_by == participant
    assert invites[0].state == "used"

    landing, again = _post_join(Client(), study, invite=invites[0].token)
    assert landing.status_code == again.status_code == 403
    assert b"has been used already" in again.content
    assert Participant.objects.filter(study=study).count() == 1
    # The browser that used it goes on to its step.
    assert first.get(url("join", study), {"invite": invites[0].token}).status_code == 302


def test_in_invites_mode_the_shared_key_joins_nobody():
    study, _ = _invite_study()
    _, joined = _post_join(Client(), study, invite=study.invite_token)
    assert joined.status_code == 403
    assert not Participant.objects.filter(study=study).exists()


def test_a_revoked_invite_or_another_studys_invite_joins_nobody():
    study, invites = _invite_study()
    other, foreign = _invite_study()
    assert flow.revoke_invites(invites=Invite.objects.filter(pk=invites[1].pk)) == 1
    _, revoked = _post_join(Client(), study, invite=invites[1].token)
    assert revoked.status_code == 403
    assert b"withdrawn" in revoked.content
    _, wrong_study = _post_join(Client(), study, invite=foreign[0].token)
    assert wrong_study.status_code == 403
    assert not Participant.objects.exists()


def test_an_invite_revoked_after_the_landing_page_refuses_the_join(client):
    study, invites = _invite_study()
    landing = client.get(url("join", study), {"invite": invites[0].token})
    assert landing.status_code == 200
    flow.revoke_invites(invites=Invite.objects.filter(pk=invites[0].pk))
    joined = client.post(url("join", study), {"invite": invites[0].token,
                                              "csrfmiddlewaretoken": str(landing.context["csrf_token"])})
    assert joined.status_code == 403
    assert not Participant.objects.exists()


def test_each_invite_is_one_place():
    study, invites = _invite_study()
    for invite in invites:
        start(Client(), study, invite=invite.token)
    assert Participant.objects.filter(study=study).count() == 3
    assert set(Invite.objects.values_list("used_by", flat=True)) == set(Participant.objects.values_list("pk", flat=True))


def test_the_admin_lists_invites_with_their_state_and_revokes_unused_ones(researcher_client):
    study, invites = _invite_study()
    start(Client(), study, invite=invites[0].token)
    page = researcher_client.get(reverse("admin:studies_invite_changelist") + f"?study__id__exact={study.pk}")
    html = page.content.decode()
    assert page.status_code == 200
    assert invites[1].token in html
    assert "used" in html
    response = researcher_client.post(reverse("admin:studies_invite_changelist"),
                                      {"action": "revoke", "_selected_action": [i.pk for i in invites]}, follow=True)
    assert b"Revoked 2 unused" in response.content
    states = [i.state for i in Invite.objects.filter(study=study).order_by("id")]
    assert states == ["used", "revoked", "revoked"]
    study_page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert "Single-use invite links: 0 unused" in study_page


def test_the_study_admin_creates_invite_links(researcher_client):
    study = make_live_study(recruitment=Study.Recruitment.INVITES)
    researcher_client.post(reverse("admin:studies_study_changelist"),
                           {"action": "create_invites", "_selected_action": [study.pk]})
    assert Invite.objects.filter(study=study, used_at=None, revoked_at=None).count() == 10
