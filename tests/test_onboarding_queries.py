"""The onboarding pages cost a handful of statements, the same at 200 items and at 50,000 (issue #26).

A newcomer's walk from the study link to the first task (landing page, join and the consent page
in its answer, consent and the instructions page in its answer, instructions and the first task in
its answer; and each step page as a reload asks for it), in a small study and in a large one whose
items are a third taken, as tests/test_annotation_queries.py builds them (`bulk_study`). Each
page's SQL statements (transaction control aside) are counted with CaptureQueriesContext; each
must stay within its budget below and be the same in both studies. A study with a cap on places
counts its seats on one row (`judgment.seats`), not on the participants' rows, so many earlier
participants cost nothing either. The landing page of a browser that joined already redirects
in one statement more than the study's.

Cache headers: every one of these pages is `no-store`. The landing page carries the CSRF token
of the join form, tied to the browser's own CSRF cookie, and the instructions page the
participant's resume link: neither shows "nothing personal", so neither may be kept by a shared
cache (docs/architecture.md, "Constant cost on the annotator's path").
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from studies.models import Participant, Study
from tests.bulk import TRANSACTION_CONTROL, bulk_study

pytestmark = pytest.mark.django_db(transaction=True)

# Statements per page (transaction control aside), as counted. The landing page: the study by
# slug, the open-items probe, the seat counter. Join (no Prolific PID): the study, the join-rate
# read, the open-items probe, the seat counter, the insert. The consent and instructions pages:
# the participant with the study (the step's guard). Consent: the guard, the participant's row
# locked, the open-items probe, the update, the seat claim (before #26: six, with the study's row
# locked and the seats counted on the participants' rows). Instructions: the guard, the locked
# read, the update (status and activity), then, in the same transaction, the first task shown in
# the answer: the claim of an item with its texts, the assignment's insert (shown now), the item's
# counters (before: nine, the task handed out in a second transaction that locked the participant
# again, looked for an open task and noted the activity again). Each
# POST's answer is the next step's page (#26: no redirect and GET), so the consent and
# instructions pages cost nothing more than their POSTs; a reload of a step page costs the below.
BUDGET = {
    "landing": 3,
    "join": 6,  # with the per-client lock that keeps the join limit exact under concurrency (#24)
    "consent page": 1,
    "consent": 5,
    "instructions page": 1,
    "instructions": 6,
    "task page": 5,  # a reload: the open task shown again
}
EARLIER_PARTICIPANTS = 300


def onboard(study: Study) -> tuple[dict[str, int], dict[str, str]]:
    """Walk one newcomer from the landing page to the instructions' POST: each page's statement
    count and its Cache-Control header."""
    client = Client()
    counts: dict[str, int] = {}
    cache: dict[str, str] = {}

    def step(name: str, method: str, view: str, data: dict | None = None) -> None:
        url = reverse(f"studies:{view}", args=[study.slug])
        with CaptureQueriesContext(connection) as queries:
            response = getattr(client, method)(url, data or {})
        assert response.status_code in (200, 302), (name, response.status_code)
        assert b"This study is full" not in response.content, name
        counts[name] = len([q for q in queries.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)])
        cache[name] = response.get("Cache-Control", "")

    step("landing", "get", "join", {"invite": study.invite_token})
    step("join", "post", "join", {"invite": study.invite_token})
    step("consent page", "get", "consent")  # a reload: the join's answer was the consent page
    step("consent", "post", "consent", {"decision": "accept"})
    step("instructions page", "get", "instructions")
    step("instructions", "post", "instructions")
    step("task page", "get", "task")
    assert Participant.objects.filter(study=study).latest("id").status == Participant.Status.ACTIVE
    return counts, cache


def capped(study: Study) -> Study:
    """The study with a cap on places and EARLIER_PARTICIPANTS seated before (through consent,
    so that the seat counter holds them as the rows do)."""
    from studies.judgment import seats

    now = timezone.now()
    Participant.objects.bulk_create(
        Participant(study=study, status=Participant.Status.ACTIVE, consent_at=now, pseudonym=f"e-{study.pk}-{i}")
        for i in range(EARLIER_PARTICIPANTS)
    )  # fmt: skip
    seated = seats.recount(study)  # with the earlier annotators of `bulk_study`'s taken share
    Study.objects.filter(pk=study.pk).update(max_participants=seated + 10)
    study.refresh_from_db()
    return study


def test_each_onboarding_page_costs_a_few_statements_at_200_and_at_50000_items():
    small, large = capped(bulk_study(200)), capped(bulk_study(50_000, taken_share=1 / 3))
    costs_small, cache_small = onboard(small)
    costs_large, cache_large = onboard(large)
    assert costs_small == costs_large
    over = {name: (n, BUDGET[name]) for name, n in costs_large.items() if n > BUDGET[name]}
    assert not over, costs_large
    for name, header in {**cache_small, **cache_large}.items():
        assert "no-store" in header, (name, header)  # each shows something of this browser's own


def test_a_browser_that_joined_is_sent_on_from_the_landing_page_in_two_statements():
    study = bulk_study(200)
    client = Client()
    url = reverse("studies:join", args=[study.slug])
    client.post(url, {"invite": study.invite_token})
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {"invite": study.invite_token})
    assert response.status_code == 302
    assert response["Location"].endswith("/consent/")
    assert len([q for q in queries.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)]) <= 2
