"""Handing out tasks: the participant's next item, in a balanced slot order, and their progress.

The annotator's hot path (issue #14). No query here reads the whole study: the next item is the
first row of the `item_open_slots` index (`rules.open_sql`: open items of a kind, highest
priority first, then fewest live assignments, then a per-item shuffle key: `rules.OPEN_ORDER`)
that this participant has not seen, claimed under its row lock (SKIP LOCKED on PostgreSQL, so participants spread over the items instead of
queueing); the place it takes is counted on the item (`rules.take_place`), and what a participant
did is read from their row (`Participant.tasks_done`, `attention_checks_done`). So a task costs
the same number of statements, each O(log n), at 200 items and at 50,000
(tests/test_annotation_queries.py). Slot order is balanced: each new annotator of an item gets
the least-used cyclic rotation of the item's canonical slot order (a Latin square over its
annotators). No participant is assigned the same item twice (the database backs it with the
`assignment_once_per_participant` constraint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.db import connection, transaction
from django.utils import timezone

from studies.judgment import rules, sql
from studies.models import (
    Assignment,
    Candidate,
    ComparisonItem,
    ItemCandidate,
    Participant,
    Prompt,
    Study,
)
from studies.templatetags.safe_markdown import is_current_html, versioned_html

# The hot path's rows (studies/judgment/sql.py): each model's columns under its alias.
A = sql.columns(Assignment, "a")
C = sql.columns(Candidate, "c")
# A judged item's candidates: whether each is an attention check's broken text, not the texts.
CK = sql.columns(Candidate, "c", only=("id", "is_attention_check"))
I = sql.columns(ComparisonItem, "i")  # noqa: E741
IC = sql.columns(ItemCandidate, "ic")
P = sql.columns(Participant, "p")
PR = sql.columns(Prompt, "pr")
S = sql.columns(Study, "s")


@dataclass(frozen=True)
class Progress:
    done: int
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100



def _attention_due(study: Study, done: int, attention_done: int) -> bool:
    """Whether the next task should be an attention check, spreading them at the study's rate."""
    return attention_done < math.floor((done + 1) * study.attention_check_rate + 0.5)


@dataclass(frozen=True)
class Done:
    """A participant's completed tasks, and how many of them were attention checks."""

    tasks: int
    attention: int

    @classmethod
    def of(cls, participant: Participant) -> Done:
        return cls(participant.tasks_done, participant.attention_checks_done)


@cache
def _participant_sql(where: str, *, lock: bool) -> str:
    return (
        f"SELECT {P.sql}, {S.sql} FROM {P.table} JOIN {S.table} ON s.id = p.study_id WHERE {where}"
        + (sql.locking("p") if lock else "")
    )


def _participant_row(row: tuple) -> Participant:
    """The participant, with their study, of a `_participant_sql` row."""
    participant = P.load(row)
    participant.study = S.load(row, len(P))
    return participant


def find_participant(*, study_id: int, slug: str, access_token: str) -> Participant | None:
    """The participant a browser's token names, with their study (one query)."""
    query = _participant_sql("p.study_id = %s AND s.slug = %s AND p.access_token = %s", lock=False)
    row = sql.fetch_one(query, [study_id, slug, access_token])
    return None if row is None else _participant_row(row)


def locked_participant(participant: Participant) -> tuple[Participant, Done]:
    """The participant's row, locked, with their study and what they did (one query)."""
    row = sql.fetch_one(_participant_sql("p.id = %s", lock=True), [participant.pk])
    if row is None:
        raise Participant.DoesNotExist()
    locked = _participant_row(row)
    return locked, Done.of(locked)


def _balanced_order(item: ComparisonItem, canonical: list[int]) -> list[int]:
    """The least-used cyclic rotation of the canonical slot order among the item's live annotators
    (`rotation_use`: how many live assignments show each ItemCandidate first)."""
    use = item.rotation_use or {}
    rotation = min(range(len(canonical)), key=lambda r: (use.get(str(canonical[r]), 0), r))
    return canonical[rotation:] + canonical[:rotation]


@cache
def _shown_sql() -> str:
    return (
        f"SELECT {IC.sql}, {C.sql} FROM {IC.table} JOIN {C.table} ON c.id = ic.candidate_id"
        " WHERE ic.item_id = %s ORDER BY ic.slot"
    )


def shown_texts(item: ComparisonItem) -> list[ItemCandidate]:
    """The item's shown texts in canonical slot order, with their candidates (one query, then
    kept on the item)."""
    cached = getattr(item, "shown_rows", None)
    if cached is None:
        cached = [shown_row(item, row, 0, C) for row in sql.fetch(_shown_sql(), [item.pk])]
        item.shown_rows = cached  # type: ignore[attr-defined]
    return cached


def _assign(participant: Participant, item: ComparisonItem, *, now: datetime, shown_now: bool) -> Assignment:
    """Give the locked `item` to the participant and count the place taken on the item."""
    order = _balanced_order(item, [shown.pk for shown in shown_texts(item)])
    assignment = sql.insert(Assignment(
        participant=participant, item=item, display_order=order, assigned_at=now, rendered_at=now if shown_now else None
    ))  # fmt: skip
    rules.take_place(item, order[0])
    return assignment


class _NothingClaimed(Exception):
    """Raised inside a claim's savepoint when it finds no item, to roll the savepoint back."""


def _claim(participant: Participant, attention: bool, *, wait: bool, now: datetime, shown_now: bool,
           room: int) -> Assignment | None:
    """Assign the first open item of one kind that the participant hasn't seen; None if none.
    `room`: how many more tasks the participant's share has after this one (the new assignment's
    `items_left` counts the open items they haven't seen up to it, for their progress bar).

    Without `wait` (PostgreSQL), the first such row that nobody else holds (SKIP LOCKED), so
    concurrent participants spread over the items instead of queueing. With `wait`, the first
    such row once its holder is done: PostgreSQL re-checks the quota on the locked row, so nobody
    is told "nothing left" while an item still has room. SQLite has no row locks, but its write
    transaction (BEGIN IMMEDIATE) already serialises us.

    Two rules keep concurrent claims free of deadlocks. A row whose re-check fails (it filled up
    while we waited) stays locked by PostgreSQL until the lock is rolled back, so each claim runs
    in a savepoint that is rolled back when it finds nothing: a failed claim holds no item. And
    a waiting claim locks rows in primary-key order, the order in which a release locks them
    (`rules.release_open_assignments`), so two waiters never hold each other's next row.
    """
    try:
        with transaction.atomic():
            assignment = _claim_in_savepoint(participant, attention, wait=wait, now=now, shown_now=shown_now,
                                             room=room)
            if assignment is None:
                raise _NothingClaimed
            return assignment
    except _NothingClaimed:
        return None


@cache
def _claim_sql(skip_locked: bool) -> str:
    """The first open item of a kind that the participant hasn't seen, locked: in the index's
    order, skipping rows others hold; or, for a claim that waits, in primary-key order (`_claim`).
    SQLite has no row locks and reads in the index's order.

    One row per text the item shows, in slot order: the item, its prompt, the text and its
    candidate; and on each row, for the participant's progress bar, the open regular items they
    haven't seen besides this one, counted in index order up to a limit (`progress`). Parameters:
    study, attention, quota, participant (the claim), then study, quota, participant, limit (the count).
    """
    in_index_order = skip_locked or not connection.features.has_select_for_update
    order = rules.OPEN_ORDER if in_index_order else "i.id"
    claim = rules.open_sql(I.sql, I.table) + f" ORDER BY {order} LIMIT 1" + sql.locking("i", skip_locked=skip_locked)
    others = (
        f"(SELECT count(*) FROM ({rules.open_sql('1', I.table)} AND i.id <> (SELECT id FROM claimed)"
        f" ORDER BY {rules.OPEN_ORDER} LIMIT %s) t)"
    )
    return (
        f"WITH claimed AS ({claim}) SELECT {I.sql}, {PR.sql}, {IC.sql}, {C.sql}, {others}"
        f" FROM claimed i JOIN {PR.table} ON pr.id = i.prompt_id JOIN {IC.table} ON ic.item_id = i.id"
        f" JOIN {C.table} ON c.id = ic.candidate_id ORDER BY ic.slot"
    )


def _claim_in_savepoint(
    participant: Participant, attention: bool, *, wait: bool, now: datetime, shown_now: bool, room: int
) -> Assignment | None:
    skip_locked = connection.features.has_select_for_update_skip_locked and not wait
    study, quota = participant.study, participant.study.annotations_per_item
    rows = sql.fetch(_claim_sql(skip_locked), [study.pk, attention, quota, participant.pk,
                                               study.pk, False, quota, participant.pk, room])  # fmt: skip
    if not rows:
        return None
    item = I.load(rows[0])
    item.prompt = PR.load(rows[0], len(I))
    if item.live_assignments >= quota:
        return None
    at = len(I) + len(PR)
    item.shown_rows = [shown_row(item, row, at, C) for row in rows]  # type: ignore[attr-defined]
    assignment = _assign(participant, item, now=now, shown_now=shown_now)
    assignment.items_left = rows[0][-1]  # type: ignore[attr-defined]
    return assignment


def shown_row(item: ComparisonItem, row: tuple, start: int, candidate: sql.Columns[Candidate]) -> ItemCandidate:
    """The ItemCandidate whose columns start at `row[start]`, with its candidate after them."""
    shown = IC.load(row, start)
    shown.candidate = candidate.load(row, start + len(IC))
    shown.item = item
    return shown


def claim_next(participant: Participant, done: Done, *, now: datetime, shown_now: bool) -> Assignment | None:
    """A new task for an active participant without one: an attention check when one is due
    (else last); items nobody holds first, then the busy ones (PostgreSQL); when no item is free,
    once more after releasing abandoned assignments."""
    due = _attention_due(participant.study, done.tasks, done.attention)
    room = max(0, participant.study.items_per_participant - done.tasks - 1)
    kinds = [(due, False), (not due, False)]
    if connection.features.has_select_for_update_skip_locked:
        kinds += [(due, True), (not due, True)]
    for attempt in range(2):
        for attention, wait in kinds:
            assignment = _claim(participant, attention, wait=wait, now=now, shown_now=shown_now, room=room)
            if assignment is not None:
                return assignment
        if attempt or not rules.release_expired_assignments(study=participant.study, now=now):
            return None
    return None


@cache
def _current_sql() -> str:
    return (
        f"SELECT {A.sql}, {I.sql}, {PR.sql} FROM {A.table} JOIN {I.table} ON i.id = a.item_id"
        f" JOIN {PR.table} ON pr.id = i.prompt_id WHERE a.participant_id = %s AND a.status = %s ORDER BY a.id LIMIT 1"
    )


def current_assignment(participant: Participant) -> Assignment | None:
    """The participant's open assignment (at most one: they are handed out under their row lock),
    with its item and the item's prompt (one query)."""
    row = sql.fetch_one(_current_sql(), [participant.pk, Assignment.Status.ASSIGNED])
    if row is None:
        return None
    assignment = A.load(row)
    assignment.item = I.load(row, len(A))
    assignment.item.prompt = PR.load(row, len(A) + len(I))
    return assignment


@transaction.atomic
def assign_next_item(*, participant: Participant, now: datetime | None = None, shown_now: bool = False) -> Assignment | None:
    """The participant's open assignment, or a new one; None when they have nothing left to do.

    Returns None when the participant is finished, has done `items_per_participant`, or no
    item with quota left remains that they haven't seen (the study ran out). `shown_now`: the
    caller displays a new assignment at once, so its render time is now (no second write).
    """
    now = now or timezone.now()
    participant, done = locked_participant(participant)
    if participant.status != Participant.Status.ACTIVE:
        return None
    open_assignment = current_assignment(participant)
    if open_assignment is not None:
        return open_assignment
    if not may_take_new_task(participant, done):
        return None
    assignment = claim_next(participant, done, now=now, shown_now=shown_now)
    if assignment is not None:
        _active(participant, now)
    return assignment


def may_take_new_task(participant: Participant, done: Done) -> bool:
    """Whether an active participant without an open task may be handed a new one now: the study
    takes participants and their share is not done."""
    study = participant.study
    return study.is_accepting_participants and done.tasks < study.items_per_participant


def _active(participant: Participant, now: datetime) -> None:
    """Note the participant's activity (the periodic sweep times out the idle ones): one UPDATE by
    primary key, on the row the caller already holds locked."""
    participant.last_active_at = now
    sql.update(participant, ["last_active_at"])


def mark_rendered(assignment: Assignment, now: datetime | None = None) -> None:
    """Record the first time the task was shown; the latency runs from here."""
    if assignment.rendered_at is None:
        now = now or timezone.now()
        Assignment.objects.filter(pk=assignment.pk, rendered_at__isnull=True).update(rendered_at=now)
        assignment.refresh_from_db(fields=["rendered_at"])


def shown_in_order(assignment: Assignment) -> list[ItemCandidate]:
    """The item's responses in the order this participant sees them (positions 1..n).

    Their candidates' rendered Markdown is stored on first display when the items step did not
    store it (or stored it with an older renderer), so later pages reuse it.
    """
    by_id = {shown.pk: shown for shown in shown_texts(assignment.item)}
    stale = [shown.candidate for shown in by_id.values() if not is_current_html(shown.candidate.text_html)]
    for candidate in stale:
        candidate.text_html = versioned_html(candidate.text)
    if stale:
        Candidate.objects.bulk_update(stale, ["text_html"])
    order = assignment.display_order or sorted(by_id, key=lambda pk: by_id[pk].slot)
    return [by_id[pk] for pk in order]


def progress(participant: Participant, *, done: int | None = None, pending: bool | None = None,
             left: int | None = None) -> Progress:
    """Done out of `items_per_participant`, or fewer when the study runs out.

    `done` and `pending` (an open task) when the caller knows them already, and `left`: the open
    regular items the participant hasn't seen, counted up to what their share still needs (as
    the claim of a new task counts them, `Assignment.items_left`); attention checks are counted
    only when those fall short.
    """
    study = participant.study
    done = rules.completed_count(participant) if done is None else done
    pending = (current_assignment(participant) is not None) if pending is None else pending
    room = study.items_per_participant - done - int(pending)
    if room <= 0:
        return Progress(done=done, total=study.items_per_participant)
    if study.status == Study.Status.CLOSED:  # a pause keeps the share ("of N"): it resumes (#25)
        left = 0
    elif left is None:
        left = rules.count_open(study, room, participant)
    elif left < room:
        left += rules.count_open(study, room - left, participant, kinds=(True,))
    left = min(room, left)
    return Progress(done=done, total=done + int(pending) + left)


