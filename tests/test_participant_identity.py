"""A participant is the browser that joined (a signed cookie), not the Prolific PID in a link."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from studies.models import Assignment, Judgment, Participant, Study
from studies.views import client_key
from tests.factories import make_live_study

pytestmark = pytest.mark.django_db

PID = "60a1b2c3d4e5f60718293a4b"


def url(name: str, study: Study, *args) -> str:
    return reverse(f"studies:{name}", args=[study.slug, *args])


def link(study: Study, **params) -> dict:
    return {"invite": study.invite_token, **params}


def start(client: Client, study: Study, **params) -> Assignment:
    """Join, consent, start and open the first task; returns its assignment."""
    assert client.post(url("join", study), link(study, **params)).status_code == 200  # the consent page
    client.post(url("consent", study), {"decision": "accept"})
    client.post(url("instructions", study))
    return client.get(url("task", study)).context["assignment"]


def test_a_fresh_browser_with_someone_elses_pid_is_told_to_continue_where_they_started(client):
    study = make_live_study(prompt_text="Secret prompt")
    theirs = start(client, study, PROLIFIC_PID=PID)
    stranger = Client()
    for response in (stranger.get(url("join", study), link(study, PROLIFIC_PID=PID)),
                     stranger.post(url("join", study), link(study, PROLIFIC_PID=PID))):
        assert response.status_code == 403
        assert b"You started this study in another browser" in response.content
        assert b"Secret prompt" not in response.content
    assert stranger.get(url("task", study)).status_code == 404
    pick = stranger.post(url("submit_judgment", study), {"assignment": theirs.pk, "choice": 1})
    assert pick.status_code == 404
    assert not Judgment.objects.exists()
    assert Participant.objects.filter(study=study).count() == 1


def test_the_stranger_cannot_answer_even_as_another_participant(client):
    study = make_live_study()
    theirs = start(client, study, PROLIFIC_PID=PID)
    stranger = Client()
    start(stranger, study, PROLIFIC_PID="someone-else")
    response = stranger.post(url("submit_judgment", study), {"assignment": theirs.pk, "choice": 1})
    assert response.status_code == 404
    assert not Judgment.objects.filter(assignment=theirs).exists()


def test_a_tampered_or_foreign_cookie_is_not_a_participant(client):
    study = make_live_study()
    start(client, study)
    participant = Participant.objects.get()
    forger = Client()
    forger.cookies[f"ualign_p{study.pk}"] = participant.access_token  # the token without a signature
    assert forger.get(url("task", study)).status_code == 404
    other = make_live_study()
    forger.cookies[f"ualign_p{other.pk}"] = client.cookies[f"ualign_p{study.pk}"].value  # another study's cookie
    assert forger.get(url("task", other)).status_code == 404


def test_the_resume_link_asks_before_binding_then_continues_the_session():
    study = make_live_study()
    first = Client()
    theirs = start(first, study, PROLIFIC_PID=PID)
    page = first.get(url("task", study))
    participant = Participant.objects.get()
    resume = url("resume", study, participant.resume_token)
    assert f"http://testserver{resume}".encode() in page.content  # shown to its owner on the task page

    device = Client()
    landing = device.get(resume)
    assert landing.status_code == 200
    assert b"Continue in this browser" in landing.content
    assert f"ualign_p{study.pk}" not in landing.cookies  # the GET binds nothing
    response = device.post(resume)
    assert response["Location"] == url("task", study)
    assert device.get(url("task", study)).context["assignment"].pk == theirs.pk
    assert device.post(url("submit_judgment", study), {"assignment": theirs.pk, "choice": 2}).status_code == 302
    assert Judgment.objects.get().assignment_id == theirs.pk


@pytest.mark.parametrize("token", ["not-a-token", "x" * 32, "../../admin"])
def test_an_unknown_resume_token_gets_a_404(client, token):
    study = make_live_study()
    start(Client(), study)
    assert client.get(f"/s/{study.slug}/resume/{token}/").status_code == 404
    assert client.post(f"/s/{study.slug}/resume/{token}/").status_code == 404


def test_another_studys_resume_token_does_not_open_this_study(client):
    study, other = make_live_study(), make_live_study()
    start(Client(), other)
    token = Participant.objects.get(study=other).resume_token
    assert client.post(url("resume", study, token)).status_code == 404


def test_the_join_rate_limit_refuses_politely_with_retry_after(client, settings):
    settings.UALIGN_JOIN_LIMIT = 2
    study = make_live_study()
    for _ in range(2):
        assert Client().post(url("join", study), link(study)).status_code == 200  # the consent page
    response = Client().post(url("join", study), link(study))
    assert response.status_code == 429
    assert b"Please try again later" in response.content
    assert int(response["Retry-After"]) > 0
    assert Participant.objects.filter(study=study).count() == 2
    # The landing page itself (a GET) and returning participants are never limited.
    assert client.get(url("join", study), link(study)).status_code == 200


def test_forwarded_addresses_count_only_behind_trusted_proxies(settings):
    factory = RequestFactory()
    spoofed = factory.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 5.6.7.8")
    settings.UALIGN_TRUSTED_PROXY_HOPS = 0
    assert client_key(spoofed) == client_key(factory.get("/", REMOTE_ADDR="10.0.0.1"))
    settings.UALIGN_TRUSTED_PROXY_HOPS = 1
    assert client_key(spoofed) == client_key(factory.get("/", REMOTE_ADDR="5.6.7.8"))
    assert client_key(spoofed) != client_key(factory.get("/", REMOTE_ADDR="1.2.3.4"))


def test_ipv6_clients_are_counted_by_their_64_bit_prefix():
    factory = RequestFactory()
    one = client_key(factory.get("/", REMOTE_ADDR="2001:db8:1:2::1"))
    assert one == client_key(factory.get("/", REMOTE_ADDR="2001:db8:1:2:ffff::9"))
    assert one != client_key(factory.get("/", REMOTE_ADDR="2001:db8:1:3::1"))
    assert "2001" not in one  # a keyed hash, never the address


def test_a_prolific_link_without_the_study_key_is_refused(client):
    study = make_live_study()
    response = client.get(url("join", study), {"PROLIFIC_PID": PID, "STUDY_ID": "s", "SESSION_ID": "x"})
    assert response.status_code == 403
    assert b"missing the study's key" in response.content
    assert client.post(url("join", study), {"PROLIFIC_PID": PID}).status_code == 403
    assert not Participant.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("PROLIFIC_PID", "abc\x07def", b"PROLIFIC_PID contains the control character U+0007."),
        ("STUDY_ID", "st\x00udy", b"STUDY_ID contains a NUL character."),
        ("SESSION_ID", "<script>", b"SESSION_ID may only hold letters"),
        ("PROLIFIC_PID", "9" * 300, b"(up to 200)"),
    ],
)
def test_control_characters_or_odd_ids_in_a_prolific_link_get_a_clear_400(client, field, value, message):
    study = make_live_study()
    params = link(study, PROLIFIC_PID=PID, STUDY_ID="st-1", SESSION_ID="se-1") | {field: value}
    for response in (client.get(url("join", study), params), client.post(url("join", study), params)):
        assert response.status_code == 400
        assert message in response.content
        assert value.encode() not in response.content
    assert not Participant.objects.exists()


def test_the_admin_shows_the_links_with_the_study_key_and_a_participants_resume_link(researcher_client):
    study = make_live_study()
    start(Client(), study)
    participant = Participant.objects.get()
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert f"/s/{study.slug}/?invite={study.invite_token}&amp;PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}" in page
    page = researcher_client.get(reverse("admin:studies_participant_change", args=[participant.pk])).content.decode()
    assert f"/s/{study.slug}/resume/{participant.resume_token}/" in page


# --- Hostile fields in a pick -------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ["²", "١", "9" * 30, "-1", "1e3", "0x1", "", "1\x00"])
def test_an_assignment_id_that_is_not_plain_digits_gets_a_404_not_a_500(client, assignment):
    study = make_live_study()
    start(client, study)
    response = client.post(url("submit_judgment", study), {"assignment": assignment, "choice": "1"})
    assert response.status_code == 404
    assert b"This link is not valid" in response.content
    assert not Judgment.objects.exists()


@pytest.mark.parametrize("choice", ["٢", "²", "9" * 5000, "1.0", "+1", "1\x00"])
def test_a_choice_in_other_digits_or_too_long_is_refused_with_a_message(client, choice):
    study = make_live_study()
    mine = start(client, study)
    response = client.post(url("submit_judgment", study), {"assignment": mine.pk, "choice": choice})
    assert response.status_code == 400
    assert b"Choose one of the responses." in response.content
    assert not Judgment.objects.exists()


def test_an_oversized_rationale_is_refused_and_not_echoed_back(client):
    study = make_live_study()
    mine = start(client, study)
    note = "Because " + "x" * 200_000
    response = client.post(url("submit_judgment", study), {"assignment": mine.pk, "choice": "1", "rationale": note})
    assert response.status_code == 400
    assert b"Your note is longer than 5000 characters" in response.content
    assert b"x" * 1000 not in response.content
    assert len(response.content) < 20_000
    assert not Judgment.objects.exists()


def test_control_characters_are_stripped_from_a_rationale(client):
    study = make_live_study()
    mine = start(client, study)
    note = "Clearer\x00 and\x07 shorter\x1b[31m.\nAlso kind."
    assert client.post(url("submit_judgment", study), {"assignment": mine.pk, "choice": "1", "rationale": note}).status_code == 302
    assert Judgment.objects.get().rationale == "Clearer and shorter[31m.\nAlso kind."
