"""The Content-Security-Policy in real Chromium: nothing on ualign's pages is blocked by it.

Chromium enforces the header and reports every blocked script, style or eval as a
`securitypolicyviolation` event; the tests collect those events and assert there are none,
while checking that the page still works (htmx swaps the next task in, the admin's job list
loads over htmx).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from studies.models import Judgment, Study
from tests.browser_flow import build_study
from tests.factories import make_prompt, make_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Runs before any page script: records every violation the browser reports, in this document.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sample || ""));
});
"""


def _watched_page(browser, console: list[str]):
    context = browser.new_context()
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    return page


def _violations(page) -> list[str]:
    return page.evaluate("window.__csp")


def test_the_annotator_pages_run_under_the_policy_without_a_violation(live_server, browser):
    study = build_study(items_per_participant=2)
    console: list[str] = []
    page = _watched_page(browser, console)

    response = page.goto(f"{live_server.url}/s/{study.slug}/?invite={study.invite_token}")
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    assert _violations(page) == []
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()
    page.wait_for_selector("#comparison[data-ready]")
    page.evaluate("window.__sameDocument = true")
    first = page.locator("#comparison").get_attribute("data-assignment")
    page.get_by_role("button", name="Choose response 1").click()
    page.wait_for_selector(f'#comparison:not([data-assignment="{first}"])')

    assert page.evaluate("window.__sameDocument === true"), "htmx swapped the next task in"
    assert page.evaluate("document.querySelectorAll('style').length") == 0, "htmx injected no <style>"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)", "annotate.css applied"
    assert _violations(page) == []
    assert console == []
    assert Judgment.objects.filter(assignment__participant__study=study).count() == 1


def test_the_results_page_runs_under_the_policy_without_a_violation(live_server, browser, researcher):
    study = build_study()
    console: list[str] = []
    page = _watched_page(browser, console)
    page.context.add_cookies([_session_cookie(live_server, researcher)])
    page.goto(f"{live_server.url}{reverse('studies:results', args=[study.slug])}")
    assert page.get_by_role("heading", name=f"Results: {study.title}").is_visible()
    assert page.evaluate("getComputedStyle(document.querySelector('h1')).fontSize") == "24px", "results.css applied"
    assert _violations(page) == []
    assert console == []


def _admin_pages(study: Study) -> list[str]:
    """Every changelist and add form of ualign's admin, plus the study's own pages."""
    from django.apps import apps
    from django.contrib import admin

    pages = [reverse("admin:index")]
    for model in (m for m in apps.get_models() if admin.site.is_registered(m)):
        opts = model._meta
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    pages += [
        reverse("admin:studies_study_change", args=[study.pk]),
        reverse("admin:studies_study_jobs", args=[study.pk]),
        reverse("admin:studies_study_import_prompts", args=[study.pk]),
        reverse("admin:studies_study_import_candidates", args=[study.pk]),
        reverse("studies:home"),
        reverse("admin:studies_study_status", args=[study.pk, "go-live"]),
        reverse("admin:studies_study_copy", args=[study.pk]),
        reverse("admin:studies_study_places", args=[study.pk]),
    ]
    return pages


def test_the_admin_works_under_the_same_policy_without_a_violation(live_server, browser, researcher):
    study = make_study(status=Study.Status.DRAFT)
    make_prompt(study=study)
    console: list[str] = []
    page = _watched_page(browser, console)
    page.context.add_cookies([_session_cookie(live_server, researcher)])
    visited = 0
    for path in _admin_pages(study):
        response = page.goto(f"{live_server.url}{path}")
        if response.status == 403:
            continue  # read-only models have no add form
        assert response.status == 200, path
        assert "'unsafe-inline'" not in response.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
        assert _violations(page) == [], path
        visited += 1
    assert visited >= 15
    # The study page loads its job list over htmx.
    page.goto(f"{live_server.url}{reverse('admin:studies_study_change', args=[study.pk])}")
    page.wait_for_selector("#job-status p:has-text('No preparation has run yet')")
    assert _violations(page) == []
    assert console == []


def _session_cookie(live_server, user) -> dict:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
            "url": live_server.url}
