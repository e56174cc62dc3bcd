"""When a pick cannot be saved, the task page says so (static/ualign/htmx-errors.js), in Chromium."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from studies.judgment import picking
from studies.models import Judgment
from tests.browser_flow import build_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SAVED = "Your picks so far are saved."


def _first_task(live_server, browser, study):
    page = browser.new_page()
    page.goto(f"{live_server.url}/s/{study.slug}/?invite={study.invite_token}")
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()
    page.wait_for_selector("#comparison[data-ready]")
    return page


def test_a_pick_that_meets_a_database_outage_says_try_again_in_a_minute_and_can_be_retried(
        live_server, browser, monkeypatch):
    study = build_study(items_per_participant=2)
    page = _first_task(live_server, browser, study)
    first = page.locator("#comparison").get_attribute("data-assignment")
    real_record = picking.record_judgment

    def outage(**kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(picking, "record_judgment", outage)
    page.get_by_role("button", name="Choose response 1").click()
    alert = page.locator("#comparison [data-connection-error]")
    alert.wait_for(state="visible")
    assert SAVED in alert.inner_text()
    assert "try again in a minute" in alert.inner_text()
    assert not Judgment.objects.exists()

    monkeypatch.setattr(picking, "record_judgment", real_record)
    page.wait_for_selector("#comparison button.pick:not([disabled])")
    page.get_by_role("button", name="Choose response 1").click()
    page.wait_for_selector(f'#comparison:not([data-assignment="{first}"])')
    assert Judgment.objects.filter(assignment_id=int(first)).count() == 1


def test_a_pick_that_cannot_be_sent_says_so_and_that_the_picks_are_saved(live_server, browser):
    study = build_study(items_per_participant=2)
    page = _first_task(live_server, browser, study)
    page.route("**/judgments/", lambda route: route.abort("connectionreset"))
    page.get_by_role("button", name="Choose response 1").click()
    alert = page.locator("#comparison [data-connection-error]")
    alert.wait_for(state="visible")
    assert "could not be sent" in alert.inner_text()
    assert SAVED in alert.inner_text()
