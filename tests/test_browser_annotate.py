"""The annotator's flow in real headless Chromium (Debian's `chromium`, driven by Playwright).

Run `make browser` once to install Chromium. With UALIGN_SCREENSHOTS=1 the screenshot test
also writes docs/screenshots/annotate-{wide,narrow}.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from studies.models import Judgment, Participant, Study
from tests.browser_flow import XSS, build_study, join
from tests.factories import make_item, make_policy, make_prompt, make_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def test_an_annotator_completes_a_study_with_the_keyboard(live_server, browser):
    study = build_study()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    join(page, live_server.url, study)
    assert page.get_by_role("heading", name="Consent").is_visible()
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()

    page.wait_for_selector("#comparison")
    page.evaluate("window.__sameDocument = true")  # survives htmx swaps, not page loads
    seen_xss = False
    for n in range(3):
        comparison = page.locator("#comparison")
        assignment = comparison.get_attribute("data-assignment")
        assert page.locator("#task-heading").inner_text().lower() == f"task {n + 1} of 3"
        if page.get_by_text(XSS, exact=False).count():
            seen_xss = True  # the tags show as text
        page.wait_for_selector("#comparison[data-ready]")
        page.keyboard.press("2")
        if n < 2:
            page.wait_for_selector(f'#comparison:not([data-assignment="{assignment}"])')
            assert page.evaluate("window.__sameDocument === true"), "the next task should be swapped in, not reloaded"
            assert page.locator("#progress .progress__label").inner_text() == f"{n + 1} of 3 done"
            # Playwright's own check: wait_for_function evaluates a string, which the page's CSP forbids.
            expect(page.locator("#task-heading")).to_be_focused()

    page.wait_for_url(f"**/s/{study.slug}/done/")
    assert page.locator("#completion-code").inner_text() == "C0MPLETE"
    assert seen_xss
    assert dialogs == []
    participant = Participant.objects.get(study=study)
    assert participant.status == Participant.Status.COMPLETED
    judgments = Judgment.objects.filter(assignment__participant=participant)
    assert judgments.count() == 3
    assert set(judgments.values_list("chosen_slot", flat=True)) == {2}
    assert all(j.latency_ms is not None for j in judgments)


def test_a_double_click_saves_one_pick(live_server, browser):
    study = build_study(items_per_participant=2)
    page = browser.new_page()
    join(page, live_server.url, study)
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()
    page.wait_for_selector("#comparison[data-ready]")
    first = page.locator("#comparison").get_attribute("data-assignment")
    page.get_by_role("button", name="Choose response 1").dblclick()
    page.wait_for_selector(f'#comparison:not([data-assignment="{first}"])')
    page.wait_for_timeout(500)  # let a stray second request land, if there were one
    participant = Participant.objects.get(study=study)
    assert list(Judgment.objects.filter(assignment__participant=participant).values_list("chosen_slot", flat=True)) == [1]
    assert participant.assignments.count() == 2  # the second task is open, still unanswered


def test_without_javascript_plain_form_posts_complete_the_study(live_server, browser):
    study = build_study(items_per_participant=3)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    join(page, live_server.url, study)
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()
    for n in range(3):
        assert page.locator("#task-heading").inner_text().lower() == f"task {n + 1} of 3"
        page.get_by_role("button", name="Choose response 1").click()
    page.wait_for_url(f"**/s/{study.slug}/done/")
    assert page.locator("#completion-code").inner_text() == "C0MPLETE"
    assert Judgment.objects.filter(assignment__participant__study=study, chosen_slot=1).count() == 3
    context.close()


def test_each_onboarding_step_is_one_round_trip_and_the_address_bar_names_the_step(live_server, browser):
    """#26: a step's POST answers with the next step's page (no redirect and second request); the
    address bar then shows that step's own URL, so a reload asks for the step, not the form again."""
    study = build_study(items_per_participant=3)
    page = browser.new_page()
    documents: list[tuple[str, str, int]] = []
    page.on("response", lambda r: documents.append((r.request.method, r.url.removeprefix(live_server.url), r.status))
            if r.request.resource_type == "document" else None)  # fmt: skip
    page.goto(f"{live_server.url}{study.participant_link()}")
    base = f"/s/{study.slug}/"
    for button, step in (("Start", "consent"), ("I agree, continue", "instructions"), ("Start the tasks", "task")):
        documents.clear()
        page.get_by_role("button", name=button, exact=True).click()
        page.wait_for_url(f"**{base}{step}/")
        assert [(method, status) for method, _, status in documents] == [("POST", 200)], documents
    assert page.locator("#task-heading").inner_text().lower() == "task 1 of 3"
    first = page.locator("input[name=assignment]").first.get_attribute("value")
    documents.clear()
    page.reload()
    assert documents == [("GET", f"{base}task/", 200)]  # the task page itself, no form sent again
    assert page.locator("input[name=assignment]").first.get_attribute("value") == first  # the same task
    assert Participant.objects.get(study=study).assignments.count() == 1
    page.close()


@pytest.mark.skipif(os.environ.get("UALIGN_SCREENSHOTS") != "1", reason="set UALIGN_SCREENSHOTS=1 to refresh docs/")
def test_task_page_screenshots(live_server, browser):
    study = make_study(status=Study.Status.LIVE, title="Helpful explanations", items_per_participant=10,
                       allow_cant_decide=True, attention_check_rate=0)
    make_item(
        study=study, prompt=make_prompt(study=study, text="Explain to a ten-year-old why the sky is blue."),
        policy=make_policy(study=study), k=2,
        texts=[
            "Sunlight looks white, but it is a mix of **all the colours**. When it passes through the air, "
            "the tiny gas molecules bounce blue light around much more than red light, so blue comes at "
            "your eyes from every direction in the sky.",
            "The sky is blue because of *Rayleigh scattering*:\n\n1. Light from the Sun hits air molecules.\n"
            "2. Short (blue) wavelengths scatter the most.\n3. We see that scattered blue light everywhere.",
            "Because the ocean reflects onto it. (That's a common myth — the real reason is that air "
            "scatters blue light more than other colours.)",
        ],
        counts=[(2, 0), (0, 1), (0, 1)],
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, viewport in (("wide", {"width": 1280, "height": 800}), ("narrow", {"width": 390, "height": 844})):
        context = browser.new_context(viewport=viewport, device_scale_factor=1)
        page = context.new_page()
        join(page, live_server.url, study)
        page.get_by_role("button", name="I agree, continue").click()
        page.get_by_role("button", name="Start the tasks").click()
        page.wait_for_selector("#comparison")
        page.screenshot(path=str(SCREENSHOTS / f"annotate-{name}.png"), full_page=True)
        context.close()


# --- Identity: a participant is their browser, not their Prolific PID ----------------------------

PID = "60a1b2c3d4e5f60718293a4b"
PROLIFIC = f"&PROLIFIC_PID={PID}&STUDY_ID=st-1&SESSION_ID=se-1"


def start_tasks(page, base_url: str, study: Study, query: str = "") -> str:
    """Join, consent and start; returns the id of the task shown."""
    join(page, base_url, study, query)
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()
    page.wait_for_selector("#comparison[data-ready]")
    return page.locator("#comparison").get_attribute("data-assignment")


def test_a_fresh_browser_with_someone_elses_prolific_pid_can_neither_see_nor_answer_their_task(live_server, browser):
    study = build_study(items_per_participant=2)
    owner = browser.new_context()
    owner_page = owner.new_page()
    assignment = start_tasks(owner_page, live_server.url, study, PROLIFIC)
    prompt = owner_page.locator(".prompt .md").inner_text()

    stranger = browser.new_context()
    page = stranger.new_page()
    response = page.goto(f"{live_server.url}{study.participant_link()}{PROLIFIC}")
    assert response.status == 403
    assert page.get_by_role("heading", name="You started this study in another browser").is_visible()
    assert prompt not in page.content()
    for path in ("task/", "consent/", "done/"):
        assert page.goto(f"{live_server.url}/s/{study.slug}/{path}").status == 404
        assert prompt not in page.content()
    # A pick posted straight at the owner's task is refused too (no participant in this browser).
    posted = page.request.post(f"{live_server.url}/s/{study.slug}/judgments/",
                               form={"assignment": assignment, "choice": "1"}, fail_on_status_code=False)
    assert posted.status in (403, 404)
    assert not Judgment.objects.exists()
    assert Participant.objects.filter(study=study).count() == 1

    owner_page.keyboard.press("1")  # the owner's own browser still works
    owner_page.wait_for_selector(f'#comparison:not([data-assignment="{assignment}"])')
    assert Judgment.objects.get().assignment_id == int(assignment)
    owner.close()
    stranger.close()


def test_the_resume_link_continues_a_session_in_another_browser(live_server, browser):
    study = build_study(items_per_participant=2)
    first = browser.new_context()
    first_page = first.new_page()
    assignment = start_tasks(first_page, live_server.url, study, PROLIFIC)
    first_page.get_by_text("Continue on another device").click()
    resume_url = first_page.get_by_label("Your resume link").input_value()
    assert f"/s/{study.slug}/resume/" in resume_url

    second = browser.new_context()  # another device: no cookies
    page = second.new_page()
    page.goto(resume_url)
    page.get_by_role("button", name="Continue in this browser").click()
    page.wait_for_selector("#comparison[data-ready]")
    assert page.locator("#comparison").get_attribute("data-assignment") == assignment
    page.keyboard.press("2")
    page.wait_for_selector(f'#comparison:not([data-assignment="{assignment}"])')
    judgment = Judgment.objects.get()
    assert judgment.assignment_id == int(assignment)
    assert judgment.chosen_slot == 2
    assert judgment.assignment.participant.external_id == PID
    first.close()
    second.close()


def test_the_join_rate_limit_refuses_a_newcomer_politely(live_server, browser, settings):
    settings.UALIGN_JOIN_LIMIT = 1
    study = build_study()
    first = browser.new_context()
    join(first.new_page(), live_server.url, study)
    second = browser.new_context()  # the same address (127.0.0.1): a second newcomer is one too many
    page = second.new_page()
    page.goto(f"{live_server.url}{study.participant_link()}")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Start", exact=True).click()
    assert posted.value.status == 429
    assert int(posted.value.headers["retry-after"]) > 0
    assert page.get_by_role("heading", name="Please try again later").is_visible()
    assert Participant.objects.filter(study=study).count() == 1
    first.close()
    second.close()
