"""studies/judgment (issue #20): the pick as one call returning an outcome, the items' counters
written by one module, and the hot path on public API only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from studies.judgment import assign, participants, picking, rules
from studies.models import Assignment, ComparisonItem, Participant, Study
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def _study(n_items: int = 3) -> Study:
    study = make_study(status=Study.Status.LIVE, annotations_per_item=1, items_per_participant=2,
                       attention_check_rate=0)  # fmt: skip
    policy = make_policy(study=study)
    for i in range(n_items):
        make_item(study=study, prompt=make_prompt(study=study), policy=policy, texts=[f"a {i}", f"b {i}"],
                  counts=[(2, 0), (0, 1)])  # fmt: skip
    return study


def _active(study: Study) -> Participant:
    return make_participant(study=study, status=Participant.Status.ACTIVE, consent_at=timezone.now())


def _key(participant: Participant) -> picking.BrowserKey:
    return picking.BrowserKey(participant.study_id, participant.study.slug, participant.access_token)


def _pick(participant: Participant, assignment_id: int, position: int | None = 1) -> picking.Outcome:
    return picking.pick(browsers=[_key(participant)], assignment_id=assignment_id, position=position,
                        cant_decide=False, rationale="", shown_now=False)  # fmt: skip


def test_a_pick_is_saved_then_replayed_and_each_outcome_says_which():
    study = _study()
    person = _active(study)
    task = assign.assign_next_item(participant=person)
    assert task is not None
    saved = _pick(person, task.pk)
    assert saved.kind is picking.OutcomeKind.SAVED
    assert saved.result is not None
    assert saved.result.next_assignment is not None
    replay = _pick(person, task.pk, position=2)
    assert replay.kind is picking.OutcomeKind.REPLAYED
    assert replay.result is not None
    assert replay.result.judgment.pk == saved.result.judgment.pk


def test_a_refused_choice_and_someone_elses_task_are_outcomes_that_save_nothing():
    study = _study()
    person, stranger = _active(study), _active(study)
    task = assign.assign_next_item(participant=person)
    assert task is not None
    invalid = _pick(person, task.pk, position=7)
    assert (invalid.kind, invalid.error) == (picking.OutcomeKind.INVALID, "Choose one of the shown responses.")
    assert _pick(stranger, task.pk).kind is picking.OutcomeKind.NOT_FOUND
    assert Assignment.objects.get(pk=task.pk).status == Assignment.Status.ASSIGNED


def test_a_late_pick_on_a_task_whose_item_was_given_away_is_lost():
    study = _study(n_items=1)
    slow, fast = _active(study), _active(study)
    task = assign.assign_next_item(participant=slow)
    assert task is not None
    rules.release_expired_assignments(study=study, now=timezone.now() + 2 * study.assignment_timeout)
    taken = assign.assign_next_item(participant=fast)
    assert taken is not None
    assert taken.item_id == task.item_id
    assert _pick(slow, task.pk).kind is picking.OutcomeKind.LOST


def test_the_counters_follow_assign_release_and_reclaim_through_rules():
    study = _study(n_items=1)
    person = _active(study)
    task = assign.assign_next_item(participant=person)
    assert task is not None
    item = ComparisonItem.objects.get(pk=task.item_id)
    assert (item.live_assignments, item.rotation_use) == (1, {str(task.display_order[0]): 1})
    rules.release_expired_assignments(study=study, now=timezone.now() + 2 * study.assignment_timeout)
    item.refresh_from_db()
    assert (item.live_assignments, item.rotation_use) == (0, {})
    assert _pick(person, task.pk).kind is picking.OutcomeKind.SAVED  # the late pick takes its place back
    item.refresh_from_db()
    assert (item.live_assignments, item.rotation_use) == (1, {str(task.display_order[0]): 1})
    assert item.live_assignments == rules.live_count(item.pk)


def test_close_out_completes_who_has_worked_and_nobody_else():
    study = _study()
    worker, idle = _active(study), _active(study)
    task = assign.assign_next_item(participant=worker)
    assert task is not None
    assert _pick(worker, task.pk).kind is picking.OutcomeKind.SAVED
    assert participants.close_out_study(study=study) == 1
    worker.refresh_from_db()
    idle.refresh_from_db()
    assert (worker.status, idle.status) == (Participant.Status.COMPLETED, Participant.Status.ACTIVE)
    assert rules.has_worked(worker)
    assert not rules.has_worked(idle)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_prepared_statements_reach_the_query_log_with_their_values():
    study = _study()
    person = _active(study)
    with CaptureQueriesContext(connection) as queries:
        task = assign.assign_next_item(participant=person)
    assert task is not None
    claims = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("WITH claimed")]
    assert claims
    assert f"i.study_id = {study.pk}" in claims[0]


# Private names of Django or psycopg (`obj._name`, apart from the documented `Model._meta`).
PRIVATE = re.compile(r"(?<![\w])(?!self\.|cls\.)\w+\._(?!meta\b)[a-z]\w*")


def test_the_project_reaches_django_and_psycopg_through_public_names_only():
    """The hot path once rebuilt Django's cursor from private API (issue #20); nothing in the
    application's code uses a private attribute of an object it did not define."""
    found = []
    for folder in ("studies/judgment", "ualign_web"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if PRIVATE.search(line.split("#")[0]):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


# Django's and psycopg's own objects as the project names them, and their private names that the
# old hot path used: none may appear anywhere in the project, tests and benches included.
DJANGO_PRIVATE = re.compile(
    r"\b(?:connection|connections\[[^\]]*\]|cursor|signing|site|settings|request|response|transaction|apps"
    r"|django(?:\.\w+)*|psycopg(?:\.\w+)*)\._(?!meta\b)[a-z]\w*"
    r"|\._state\b|\._prepare_cursor\b|\bServerBindingCursor\b|\bcursor\._query\b"
)


def test_no_private_name_of_django_or_psycopg_anywhere_in_the_project():
    found = []
    for folder in ("studies", "ualign_web", "workers", "tests", "bench", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == Path(__file__) or "migrations" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if DJANGO_PRIVATE.search(line.split("#")[0]):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
