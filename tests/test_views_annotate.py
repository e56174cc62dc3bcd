"""The annotator's pages, through Django's test client: full pages, htmx partials and redirects."""

from __future__ import annotations

import re

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from studies.judgment import assign, rules
from studies.models import Assignment, Judgment, Participant, Study
from tests.annotator import HX, join, open_assignment, start, url
from tests.factories import (
    make_attention_item,
    make_item,
    make_live_study,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db

# --- Entry --------------------------------------------------------------------------------


def test_an_invite_link_shows_a_landing_page_and_its_post_creates_the_participant(client):
    study = make_live_study()
    landing = client.get(url("join", study), {"invite": study.invite_token})
    assert landing.status_code == 200
    assert b"Start" in landing.content
    assert not Participant.objects.exists()  # the GET has no side effects
    response = client.post(url("join", study), {"invite": study.invite_token})
    assert response.status_code == 200  # the consent page in the answer, no redirect (#26), naming its URL
    assert b'name="decision"' in response.content
    assert f'<link rel="canonical" href="{url("consent", study)}">' in response.content.decode()
    assert client.get(url("consent", study)).status_code == 200  # what a reload asks for
    participant = Participant.objects.get(study=study)
    assert participant.external_id == ""
    cookie = client.cookies[f"ualign_p{study.pk}"]
    assert cookie["httponly"]
    assert cookie["path"] == url("join", study)
    assert cookie["samesite"] == "Lax"
    request = RequestFactory().get("/", headers={"cookie": f"{cookie.key}={cookie.value}"})
    assert request.get_signed_cookie(cookie.key, salt="ualign.participant", max_age=3600) == participant.access_token


def test_prolific_parameters_create_one_participant_that_the_same_browser_resumes(client):
    study = make_live_study()
    params = {"PROLIFIC_PID": "60a1b2c3d4e5f60718293a4b", "STUDY_ID": "st-1", "SESSION_ID": "se-1"}
    first = start(client, study, **params)
    client.get(url("task", study))
    assignment = open_assignment(first)

    response = client.get(url("join", study), {"invite": study.invite_token, **params})
    assert response["Location"] == url("task", study)
    assert client.get(url("task", study)).context["assignment"].pk == assignment.pk
    assert Participant.objects.filter(study=study).count() == 1
    first.refresh_from_db()
    assert (first.prolific_study_id, first.prolific_session_id) == ("st-1", "se-1")


def test_a_wrong_or_missing_key_unknown_study_or_foreign_browser_gets_a_polite_4xx(client):
    study = make_live_study()
    for response, status in (
        (client.get(url("join", study), {"invite": "nope"}), 403),
        (client.get(url("join", study)), 403),
        (client.post(url("join", study), {"invite": "nope"}), 403),
        (client.get(url("join", study), {"PROLIFIC_PID": "60a1b2c3d4e5f60718293a4b"}), 403),
        (client.get("/s/no-such-study/", {"invite": study.invite_token}), 404),
        (client.get(url("join", study), {"invite": study.invite_token, "PROLIFIC_PID": "<script>"}), 400),
        (client.get(url("task", study)), 404),
    ):
        assert response.status_code == status
        assert b"This link is not valid" in response.content
    assert b"missing the study's key" in client.get(url("join", study)).content
    assert not Participant.objects.exists()


@pytest.mark.parametrize(("status", "message"), [("ready", b"This study is not open"), ("closed", b"This study has closed")])
def test_a_study_that_is_not_live_says_so_politely(client, status, message):
    study = make_live_study(status=status)
    response = client.get(url("join", study), {"invite": study.invite_token})
    assert response.status_code == 200
    assert message in response.content
    assert not Participant.objects.exists()


def test_a_full_study_says_so_politely(client):
    study = make_live_study(max_participants=1)
    start(client, study)
    response = Client().get(url("join", study), {"invite": study.invite_token})
    assert response.status_code == 200
    assert b"This study is full" in response.content


# --- Consent, instructions, comprehension --------------------------------------------------


def test_consent_page_renders_the_consent_text_as_safe_markdown(client):
    study = make_live_study(consent_text="**Bold** terms <script>alert('x')</script>")
    join(client, study)
    response = client.get(url("consent", study))
    assert b"<strong>Bold</strong>" in response.content
    assert b"&lt;script&gt;alert(" in response.content
    assert b"<script>alert" not in response.content


def test_declining_consent_ends_politely_with_the_prolific_hint(client):
    study = make_live_study()
    participant = join(client, study)
    response = client.post(url("consent", study), {"decision": "decline"}, follow=True)
    participant.refresh_from_db()
    assert participant.status == Participant.Status.DECLINED
    assert participant.consent_at is None
    assert b"You chose not to take part" in response.content
    assert b"return the study on Prolific" in response.content
    # Declining is final: the task page sends them back to the goodbye.
    assert client.get(url("task", study))["Location"] == url("done", study)


def test_tasks_cannot_be_reached_before_consent(client):
    study = make_live_study()
    join(client, study)
    assert client.get(url("task", study))["Location"] == url("consent", study)
    assert client.get(url("instructions", study))["Location"] == url("consent", study)


def test_comprehension_check_gives_a_second_attempt_then_ends_the_session(client):
    study = make_live_study(comprehension_question="What do you do?", comprehension_choices=["Pick the best", "Pick 1"],
                       comprehension_answer="Pick the best")
    participant = join(client, study)
    client.post(url("consent", study), {"decision": "accept"})
    page = client.get(url("instructions", study))
    assert b"What do you do?" in page.content
    retry = client.post(url("instructions", study), {"answer": "Pick 1"})
    assert retry.status_code == 200
    assert b"1 attempt left" in retry.content
    ended = client.post(url("instructions", study), {"answer": "Pick 1"}, follow=True)
    participant.refresh_from_db()
    assert participant.status == Participant.Status.SCREENED_OUT
    assert b"this session has ended" in ended.content


def test_a_right_comprehension_answer_starts_the_tasks(client):
    study = make_live_study(comprehension_question="What do you do?", comprehension_choices=["Pick the best", "Pick 1"],
                       comprehension_answer="Pick the best")
    join(client, study)
    client.post(url("consent", study), {"decision": "accept"})
    response = client.post(url("instructions", study), {"answer": "Pick the best"})
    assert response.status_code == 200  # the first task in the answer, naming the task page's URL
    assert response.context["assignment"].participant.status == Participant.Status.ACTIVE
    assert f'<link rel="canonical" href="{url("task", study)}">' in response.content.decode()


# --- The task page ------------------------------------------------------------------------


def test_task_page_shows_the_prompt_and_numbered_responses(client):
    study = make_live_study(allow_cant_decide=True)
    start(client, study)
    response = client.get(url("task", study))
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html
    assert 'id="comparison"' in html
    assert 'hx-post="' + url("submit_judgment", study) in html
    assert re.search(r'name="choice" value="1"', html)
    assert re.search(r'name="choice" value="2"', html)
    assert "Prompt number" in html
    assert "I can&#x27;t decide" in html or "I can't decide" in html
    assert '<progress id="progress-bar" max="2" value="0">' in html
    assert response.context["assignment"].rendered_at is not None


def test_model_output_is_escaped_not_executed(client):
    study = make_study(status=Study.Status.LIVE, items_per_participant=1, attention_check_rate=0)
    make_item(study=study, prompt=make_prompt(study=study, text="Say <b>hi</b>"), policy=make_policy(study=study),
              texts=['<script>alert("pwned")</script>', "[click](javascript:alert(1)) <img src=x onerror=alert(2)>"],
              counts=[(1, 0), (0, 1)], k=1)
    start(client, study)
    html = client.get(url("task", study)).content.decode()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    assert '<script>alert("pwned")' not in html
    assert "javascript:" not in html.replace("[click](javascript:alert(1))", "")
    assert "<img" not in html
    assert "Say &lt;b&gt;hi&lt;/b&gt;" in html


def test_a_pick_by_plain_post_redirects_to_the_next_task(client):
    study = make_live_study()
    participant = start(client, study)
    client.get(url("task", study))
    first = open_assignment(participant)
    response = client.post(url("submit_judgment", study), {"assignment": first.pk, "choice": 2, "rationale": "clearer"})
    assert response.status_code == 302
    assert response["Location"] == url("task", study)
    judgment = Judgment.objects.get(assignment=first)
    assert (judgment.chosen_slot, judgment.rationale) == (2, "clearer")
    assert judgment.latency_ms is not None
    second = client.get(url("task", study))
    assert second.context["assignment"].pk != first.pk


def test_a_pick_by_htmx_returns_the_next_task_as_a_partial(client):
    study = make_live_study(items_per_participant=3)
    participant = start(client, study)
    client.get(url("task", study))
    first = open_assignment(participant)
    response = client.post(url("submit_judgment", study), {"assignment": first.pk, "choice": 1}, headers=HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert html.lstrip().startswith('<section id="comparison"')
    nxt = open_assignment(participant)
    assert f'data-assignment="{nxt.pk}"' in html
    assert 'hx-swap-oob="innerHTML"' in html
    assert "1 of 3 done" in html
    assert Judgment.objects.filter(assignment=first).exists()


def test_a_double_submit_saves_one_judgment_and_shows_the_next_task(client):
    study = make_live_study(items_per_participant=3)
    participant = start(client, study)
    client.get(url("task", study))
    first = open_assignment(participant)
    client.post(url("submit_judgment", study), {"assignment": first.pk, "choice": 1}, headers=HX)
    replay = client.post(url("submit_judgment", study), {"assignment": first.pk, "choice": 2}, headers=HX)
    assert replay.status_code == 200
    assert Judgment.objects.filter(assignment=first).count() == 1
    assert Judgment.objects.get(assignment=first).chosen_slot == 1
    assert f'data-assignment="{open_assignment(participant).pk}"' in replay.content.decode()
    assert participant.assignments.count() == 2


def test_a_missing_choice_re_renders_the_same_task_with_an_error(client):
    study = make_live_study()
    participant = start(client, study)
    client.get(url("task", study))
    assignment = open_assignment(participant)
    partial = client.post(url("submit_judgment", study), {"assignment": assignment.pk, "rationale": "hmm"}, headers=HX)
    assert partial.status_code == 200
    assert "<html" not in partial.content.decode()
    assert b"Choose one of the responses" in partial.content
    assert f'data-assignment="{assignment.pk}"'.encode() in partial.content
    assert b">hmm</textarea>" in partial.content
    full = client.post(url("submit_judgment", study), {"assignment": assignment.pk, "choice": 7})
    assert full.status_code == 400
    assert b"<html" in full.content
    assert not Judgment.objects.exists()


def test_someone_elses_assignment_id_gets_a_404(client):
    study = make_live_study()
    owner = start(client, study)
    client.get(url("task", study))
    theirs = open_assignment(owner)
    intruder = Client()
    start(intruder, study)
    response = intruder.post(url("submit_judgment", study), {"assignment": theirs.pk, "choice": 1}, headers=HX)
    assert response.status_code == 404
    assert not Judgment.objects.exists()


def test_judgment_posts_need_a_csrf_token():
    study = make_live_study()
    browser = Client(enforce_csrf_checks=True)
    join(browser, study)
    assert browser.post(url("consent", study), {"decision": "accept"}).status_code == 403
    consent = browser.get(url("consent", study))
    token = consent.context["csrf_token"]
    assert browser.post(url("consent", study), {"decision": "accept", "csrfmiddlewaretoken": token}).status_code == 200


def test_cant_decide_is_offered_on_attention_checks_too_and_misses_them(client):
    """#25: a check shows the same controls as every task (else it stands out); "can't decide"
    on it counts as a miss, as a careful reader can always tell its off-topic answer."""
    study = make_study(status=Study.Status.LIVE, allow_cant_decide=True, items_per_participant=1, attention_check_rate=1)
    make_attention_item(study=study, prompt=make_prompt(study=study), texts=["A fine answer.", "asdf qwer zxcv"], broken=1)
    participant = start(client, study)
    html = client.get(url("task", study)).content.decode()
    assert 'name="cant_decide"' in html
    assignment = open_assignment(participant)
    client.post(url("submit_judgment", study), {"assignment": assignment.pk, "cant_decide": "on"})
    judgment = Judgment.objects.get(assignment=assignment)
    assert (judgment.cant_decide, judgment.attention_passed) == (True, False)


def test_cant_decide_is_not_offered_when_the_study_does_not_allow_it(client):
    study = make_live_study(allow_cant_decide=False)
    start(client, study)
    assert 'name="cant_decide"' not in client.get(url("task", study)).content.decode()


def test_cant_decide_is_recorded_from_the_page(client):
    study = make_live_study(allow_cant_decide=True, cant_decide_analysis="tie")
    participant = start(client, study)
    client.get(url("task", study))
    assignment = open_assignment(participant)
    client.post(url("submit_judgment", study), {"assignment": assignment.pk, "cant_decide": "on"}, headers=HX)
    judgment = Judgment.objects.get(assignment=assignment)
    assert judgment.cant_decide
    assert judgment.credit == pytest.approx(2 / 3)


# --- Completion and ending ----------------------------------------------------------------


def answer_all(client: Client, study: Study, participant: Participant, headers=None):
    responses = []
    while (assignment := participant.assignments.filter(status=Assignment.Status.ASSIGNED).first()) is not None:
        responses.append(client.post(url("submit_judgment", study), {"assignment": assignment.pk, "choice": 1},
                                     headers=headers or {}))
    return responses


def test_finishing_shows_the_completion_code_and_the_redirect_link(client):
    study = make_live_study(completion_code="ABCD1234", completion_redirect_url="https://app.prolific.com/submissions/complete?cc=ABCD1234")
    participant = start(client, study)
    client.get(url("task", study))
    last = answer_all(client, study, participant, headers=HX)[-1]
    assert last.status_code == 200
    assert last["HX-Redirect"] == url("done", study)
    done = client.get(url("done", study))
    assert b"ABCD1234" in done.content
    assert b'href="https://app.prolific.com/submissions/complete?cc=ABCD1234"' in done.content
    participant.refresh_from_db()
    assert participant.status == Participant.Status.COMPLETED
    assert participant.completion_code == "ABCD1234"
    # A finished participant can't re-open tasks; the entry link shows the code again.
    assert client.get(url("task", study))["Location"] == url("done", study)
    assert client.get(url("join", study), {"invite": study.invite_token})["Location"] == url("done", study)


def test_without_javascript_the_last_pick_redirects_to_the_completion_page(client):
    study = make_live_study(items_per_participant=1, completion_code="NOJS0001")
    participant = start(client, study)
    client.get(url("task", study))
    (last,) = answer_all(client, study, participant)
    assert last["Location"] == url("done", study)
    assert b"NOJS0001" in client.get(url("done", study)).content


def test_a_study_that_runs_out_completes_those_who_did_some_work(client):
    study = make_live_study(n_items=1, items_per_participant=5, annotations_per_item=1)
    participant = start(client, study)
    page = client.get(url("task", study))
    assert page.context["progress"].total == 1  # fewer than 5: that's all there is
    (last,) = answer_all(client, study, participant)
    assert last["Location"] == url("done", study)
    participant.refresh_from_db()
    assert participant.status == Participant.Status.COMPLETED


def test_failing_attention_checks_ends_the_session_politely(client):
    study = make_study(status=Study.Status.LIVE, max_attention_failures=1, items_per_participant=3, attention_check_rate=1)
    prompt = make_prompt(study=study)
    for r in range(3):
        make_attention_item(study=study, prompt=prompt, texts=[f"Fine {r}.", f"xq zv {r}"], broken=1, replicate=r)
    participant = start(client, study)
    client.get(url("task", study))
    assignment = open_assignment(participant)
    broken = next(i for i, s in enumerate(assign.shown_in_order(assignment), 1) if s.candidate.is_attention_check)
    response = client.post(url("submit_judgment", study), {"assignment": assignment.pk, "choice": broken}, headers=HX)
    assert response["HX-Redirect"] == url("done", study)
    participant.refresh_from_db()
    assert participant.status == Participant.Status.ENDED
    assert participant.attention_failures == 1
    assert b"the study has ended for you" in client.get(url("done", study)).content


def test_a_pick_on_a_released_assignment_whose_item_was_refilled_says_so(client):
    study = make_live_study(n_items=3, annotations_per_item=1, items_per_participant=2)
    slow = start(client, study)
    client.get(url("task", study))
    stale = open_assignment(slow)
    later = timezone.now() + study.assignment_timeout * 2
    rules.release_expired_assignments(study=study, now=later)
    other = Participant.objects.create(study=study, status=Participant.Status.ACTIVE)
    Assignment.objects.create(participant=other, item=stale.item, status=Assignment.Status.COMPLETED)
    response = client.post(url("submit_judgment", study), {"assignment": stale.pk, "choice": 1}, headers=HX)
    assert response.status_code == 200
    assert b"timed out" in response.content
    assert not Judgment.objects.filter(assignment=stale).exists()
    assert open_assignment(slow).item_id != stale.item_id


def test_researchers_see_attention_failures_in_the_admin(researcher_client, client):
    study = make_live_study()
    participant = start(client, study)
    Participant.objects.filter(pk=participant.pk).update(attention_failures=2)
    response = researcher_client.get(reverse("admin:studies_participant_changelist"), {"failed_attention": "yes"})
    assert response.status_code == 200
    assert participant.pseudonym.encode() in response.content
    response = researcher_client.get(reverse("admin:studies_participant_changelist"), {"failed_attention": "no"})
    assert participant.pseudonym.encode() not in response.content


def test_the_admin_needs_a_staff_login(client, outsider):
    client.force_login(outsider)
    response = client.get(reverse("admin:studies_participant_changelist"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]
