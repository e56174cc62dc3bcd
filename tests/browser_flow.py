"""The study and the first step the headless-Chromium tests share (tests/test_browser_*.py).

The `browser` fixture itself (one Chromium per test module) is in tests/conftest.py.
"""

from __future__ import annotations

from playwright.sync_api import expect

from studies.models import Study
from tests.factories import make_item, make_policy, make_prompt, make_study

XSS = '<script>alert("xss")</script>'


def build_study(**overrides) -> Study:
    fields = {
        "status": Study.Status.LIVE,
        "title": "Which answer is better?",
        "consent_text": "## Consent\n\nYou will compare short answers. Taking part is **voluntary**.",
        "instructions": "Read the prompt, then pick the response you would rather receive.",
        "items_per_participant": 3,
        "annotations_per_item": 1,
        "attention_check_rate": 0,
        "completion_code": "C0MPLETE",
    }
    fields.update(overrides)
    study = make_study(**fields)
    policy = make_policy(study=study)
    make_item(study=study, prompt=make_prompt(study=study, text="Greet the user."), policy=policy,
              texts=[XSS + " Hello!", "Hi **there**, how can I help?"], counts=[(1, 0), (0, 1)], k=1)
    for i in range(2):
        make_item(study=study, prompt=make_prompt(study=study, text=f"Name a colour ({i})."), policy=policy,
                  texts=[f"Blue {i}", f"Green {i}", f"Red {i}"], counts=[(1, 0), (1, 0), (0, 1)], k=2)
    return study


def join(page, base_url: str, study: Study, query: str = "") -> None:
    """Open the study link (its landing page) and press Start, as an annotator does: the consent
    page comes in the join's answer (with JavaScript, the address bar then shows its own URL)."""
    page.goto(f"{base_url}{study.participant_link()}{query}")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.get_by_role("button", name="I agree, continue")).to_be_visible()
