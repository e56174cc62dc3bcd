"""The researcher's path in real headless Chromium (issue #12, deliverable 8): log in to the admin,
import prompts, go live, watch the places fill while an annotator works, pause (a newcomer sees
the paused page, the one mid-task finishes their task), resume, close, and the participant who
worked gets the completion code after the close.

Preparing is replaced by comparison items built with the test factories (the pipeline has its own
tests, through a real worker, in tests/test_tasks_worker.py); everything else goes through the pages.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from studies.models import Judgment, Participant, Study
from tests.browser_flow import join
from tests.factories import make_generator, make_item, make_policy, make_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROMPTS_CSV = b"text,external_id\nName a colour.,c1\nGreet the user.,c2\nSay thanks.,c3\n"


def log_in(page, base_url: str) -> None:
    page.goto(f"{base_url}{reverse('admin:login')}")
    page.get_by_label("Username").fill("researcher")
    page.get_by_label("Password").fill("pw-researcher")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}{reverse('admin:index')}")


def import_prompts(page, study: Study) -> None:
    page.get_by_role("link", name="import from CSV or JSONL").click()
    page.locator("input[type=file]").set_input_files(
        files=[{"name": "prompts.csv", "mimeType": "text/csv", "buffer": PROMPTS_CSV}]
    )
    page.get_by_role("button", name="Import").click()
    page.wait_for_url(f"**{reverse('admin:studies_study_change', args=[study.pk])}")


def prepare_with_factories(study: Study) -> None:
    """What Prepare leaves behind: comparison items on every prompt, and the study ready."""
    policy = make_policy(study=study, name="u-align")
    for prompt in study.prompts.order_by("id"):
        make_item(study=study, prompt=prompt, policy=policy, texts=[f"{prompt.external_id} one", f"{prompt.external_id} two"],
                  counts=[(1, 0), (0, 1)], k=1)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.READY)


def move(page, name: str, label: str) -> None:
    """Press a lifecycle button on the study's page and confirm it."""
    page.locator(f"#study-{name}").click()
    assert page.locator("#confirm-heading").inner_text() == f"{label}?"
    page.locator("#confirm-button").click()
    page.wait_for_selector("ul.messagelist")


def start(page, base_url: str, study: Study) -> None:
    join(page, base_url, study)
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()
    page.wait_for_selector("#comparison[data-ready]")


def pick(page, position: int = 1) -> None:
    shown = page.locator("#comparison").get_attribute("data-assignment")
    page.get_by_role("button", name=f"Choose response {position}").click()
    page.wait_for_selector(f'#comparison:not([data-assignment="{shown}"])')


def test_a_researcher_runs_a_study_from_the_admin_start_to_close(live_server, browser, researcher):
    study = make_study(title="Colours", generator=make_generator(), max_participants=2, items_per_participant=3,
                       annotations_per_item=2, attention_check_rate=0, completion_code="PAID-42")
    base = live_server.url
    admin_page = browser.new_context().new_page()
    log_in(admin_page, base)
    admin_page.goto(f"{base}{reverse('admin:studies_study_change', args=[study.pk])}")
    import_prompts(admin_page, study)
    assert "Imported 3 prompts" in admin_page.locator("ul.messagelist").inner_text()
    assert sorted(study.prompts.values_list("external_id", flat=True)) == ["c1", "c2", "c3"]

    prepare_with_factories(study)
    admin_page.reload()
    assert "so its design is fixed" in admin_page.locator("#design-fixed").inner_text()
    move(admin_page, "go-live", "Go live")
    assert "is now live" in admin_page.locator("ul.messagelist").inner_text()
    assert admin_page.locator("#places-filled").inner_text() == "0 / 2"

    # An annotator starts: the study page's places figure changes, without a reload.
    annotator = browser.new_context().new_page()
    start(annotator, base, study)
    expect(admin_page.locator("#places-filled")).to_have_text("1 / 2", timeout=20_000)  # polled every 5 s
    pick(annotator)  # one pick; the second task is open now

    # Pause: a newcomer is told politely; the annotator mid-task finishes their open task.
    move(admin_page, "pause", "Pause")
    assert Study.objects.get(pk=study.pk).status == Study.Status.PAUSED
    newcomer = browser.new_context().new_page()
    newcomer.goto(f"{base}{study.participant_link()}")
    assert newcomer.get_by_role("heading", name="This study is paused").is_visible()
    annotator.get_by_role("button", name="Choose response 2").click()
    annotator.wait_for_selector("#paused-heading")
    assert "Your answers so far are saved" in annotator.content()
    worker = Participant.objects.get(study=study)
    assert Judgment.objects.filter(assignment__participant=worker).count() == 2
    assert Participant.objects.filter(study=study).count() == 1  # the newcomer joined nothing

    # Resume: the annotator continues; a second annotator joins and leaves without a pick.
    move(admin_page, "resume", "Resume")
    annotator.goto(f"{base}{reverse('studies:task', args=[study.slug])}")
    annotator.wait_for_selector("#comparison[data-ready]")
    second = browser.new_context().new_page()
    start(second, base, study)
    expect(admin_page.locator("#places-filled")).to_have_text("2 / 2", timeout=20_000)  # polled every 5 s

    # Close: the one who worked gets the completion code on their next page; the other is told it closed.
    move(admin_page, "close", "Close")
    assert admin_page.locator("#study-resume").count() == 0
    assert admin_page.locator("#study-go-live").count() == 0
    annotator.reload()
    annotator.wait_for_url(re.compile(rf".*/s/{study.slug}/done/$"))
    assert annotator.locator("#completion-code").inner_text() == "PAID-42"
    second.reload()
    assert second.get_by_role("heading", name="This study has closed").is_visible()
    worker.refresh_from_db()
    assert (worker.status, worker.completion_code) == (Participant.Status.COMPLETED, "PAID-42")
