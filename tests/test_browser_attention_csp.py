"""Picks in real Chromium (#25): no console error and no CSP violation on any pick (by button,
by key, with a note, "I can't decide", an attention check), and an attention check that looks
like every other task (same controls, text that reads as text)."""

from __future__ import annotations

import pytest

from studies.models import Judgment
from tests.browser_flow import build_study
from tests.factories import make_attention_item, make_item, make_prompt

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sample || ""));
});
"""


@pytest.mark.parametrize("debug", [False, True])
def test_every_kind_of_pick_leaves_the_console_clean(live_server, browser, settings, debug):
    settings.DEBUG = debug  # `make run` serves with DEBUG on (django-htmx adds its debug script then)
    study = build_study(items_per_participant=5, allow_cant_decide=True, attention_check_rate=0.25)
    table = make_prompt(study=study, text="Compare the two plans.")
    make_item(study=study, prompt=table, policy=study.policies.first(), counts=[(1, 0), (0, 1)], k=1,
              texts=["| plan | cost |\n|:--|--:|\n| A | 3 |", "| plan | cost |\n|:-:|:-:|\n| B | 4 |"])
    make_attention_item(study=study, prompt=make_prompt(study=study, text="Name a fruit."),
                        texts=["An apple is a fruit.", "Paris is the capital of France and sits on the Seine."],
                        broken=1)  # fmt: skip
    context = browser.new_context()
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

    page.goto(f"{live_server.url}{study.participant_link()}")
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_role("button", name="I agree, continue").click()
    page.get_by_role("button", name="Start the tasks").click()
    page.evaluate("window.__sameDocument = true")

    saw_check = False
    for n in range(5):
        page.wait_for_selector("#comparison[data-ready]")
        current = page.locator("#comparison").get_attribute("data-assignment")
        assert page.get_by_role("button", name="I can't decide").is_visible()  # on every task, checks too
        is_check = "Name a fruit." in page.locator(".prompt").inner_text()
        saw_check = saw_check or is_check
        if is_check:
            good = 1 if "apple" in page.locator(".response").first.inner_text() else 2
            page.get_by_role("button", name=f"Choose response {good}").click()
        elif n == 0:
            page.locator("#id_rationale").fill("Clearer.")
            page.get_by_role("button", name="Choose response 1").click()
        elif n == 1:
            page.keyboard.press("2")
        else:
            page.get_by_role("button", name="I can't decide").click()
        if n < 4:
            page.wait_for_selector(f'#comparison:not([data-assignment="{current}"])')
    page.wait_for_url(f"**/s/{study.slug}/done/")

    assert saw_check
    assert page.evaluate("window.__csp") == []
    assert console == []
    assert Judgment.objects.filter(assignment__participant__study=study).count() == 5
    checked = Judgment.objects.get(assignment__item__is_attention_check=True)
    assert checked.attention_passed is True
