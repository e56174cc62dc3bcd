"""The participant flow: join, consent, comprehension, assignment, judgments, completion.

These are the cross-model workflows behind the annotator's pages (`studies/views.py`). Every
function is keyword-only and atomic. The rules they keep:

- a Prolific PID joins once (`join_study` raises AlreadyJoined after that: only the browser it
  joined with, or its resume link, continues it), and one client creates at most
  `UALIGN_JOIN_LIMIT` participants per study and window (`check_join_rate`);

- each item gets at most `Study.annotations_per_item` live assignments (assigned or completed),
  even with concurrent participants: the item row is locked before its quota is read
  (`select_for_update(skip_locked=True)` on PostgreSQL, so participants skip a busy item instead
  of queueing on it; SQLite serialises write transactions, see settings.py);
- no participant is assigned the same item twice (and the database backs it with the
  `assignment_once_per_participant` constraint);
- slot order is balanced: each new annotator of an item gets the least-used cyclic rotation of
  the item's canonical slot order (a Latin square over its annotators);
- every pick is saved exactly once: `record_judgment` locks the assignment and returns the
  existing judgment when there is one (a double click, a resubmitted form, a replayed request);
- items decided by construction (`ComparisonItem.needs_judgment` False: one text shown, credit
  k/(k+m) whatever the pick) are never assigned, and count in no quota, "full" or progress.

Constant cost (issue #14). No query on the annotator's path reads the whole study: an item
carries its live assignments and the rotations they show (`ComparisonItem.live_assignments`,
`rotation_use`), changed only here, in the transaction that assigns, releases or reclaims, under
the item's row lock; the next item is the first row of the `item_open_slots` index (open items of
a kind, fewest live assignments first, then a per-item shuffle key) that this participant has not
seen; what a participant did is kept on their row (`Participant.tasks_done`,
`attention_checks_done`), moved on by the pick that completes each task, under the participant's
row lock. So a
pick costs the same number of queries, each O(log n), at 200 items and at 50,000
(tests/test_annotation_queries.py). Abandoned assignments are released when a participant finds
no free item, when a newcomer finds the study full, and by anyone calling
`release_expired_assignments`; a study's or some participants' open ones by
`release_open_assignments` (studies/judgment/participants.py: sweep, returned, close-out). Those two are
the only functions that release, so the counters stay true.
"""

from __future__ import annotations

import hmac
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    F,
    Q,
    QuerySet,
)
from django.utils import timezone

from studies.judgment import sql
from studies.models import (
    Assignment,
    Candidate,
    ComparisonItem,
    ItemCandidate,
    Judgment,
    Participant,
    Prompt,
    Study,
)
from studies.templatetags.safe_markdown import is_current_html, versioned_html
from workers.policies.credit import judgment_credit

LIVE_ASSIGNMENT = Q(status__in=[Assignment.Status.ASSIGNED, Assignment.Status.COMPLETED])
# Statuses after which a participant gets no more tasks.
FINISHED = {
    Participant.Status.COMPLETED,
    Participant.Status.ENDED,
    Participant.Status.DECLINED,
    Participant.Status.SCREENED_OUT,
    Participant.Status.TIMED_OUT,
    Participant.Status.RETURNED,
}
# Statuses that give a consented participant's seat back (studies/judgment/participants.py sets them).
SEAT_FREED = (Participant.Status.TIMED_OUT, Participant.Status.RETURNED)
COMPREHENSION_ATTEMPTS = 2
# The hot path's rows (studies/judgment/sql.py): each model's columns under its alias.
_A = sql.columns(Assignment, "a")
_C = sql.columns(Candidate, "c")
# A judged item's candidates: whether each is an attention check's broken text, not the texts.
_CK = sql.columns(Candidate, "c", only=("id", "is_attention_check"))
_I = sql.columns(ComparisonItem, "i")
_IC = sql.columns(ItemCandidate, "ic")
_P = sql.columns(Participant, "p")
_PR = sql.columns(Prompt, "pr")
_S = sql.columns(Study, "s")


class StudyUnavailable(Exception):
    """The study takes no new participants: not live, full, or nothing left to annotate."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "closed", "paused" or "full"


class AssignmentLost(Exception):
    """A pick arrived for an assignment that timed out and whose item has since been filled."""


class InvalidChoice(ValueError):
    """The submitted position is not one of the shown responses (or can't-decide isn't allowed)."""


@dataclass(frozen=True)
class Progress:
    done: int
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


@dataclass(frozen=True)
class JudgmentResult:
    """A saved pick. With `record_judgment(assign_next=True)` a new pick also carries the
    participant as it is now and their next task (None when they are done or none is left)."""

    judgment: Judgment
    created: bool
    participant: Participant | None = None
    next_assignment: Assignment | None = None
    done: int | None = None  # the participant's completed tasks, this pick included


# --- Joining ------------------------------------------------------------------------------


def is_valid_invite(study: Study, token: str) -> bool:
    return bool(token) and hmac.compare_digest(token.encode(), study.invite_token.encode())


def seats_taken(study: Study, *, up_to: int | None = None) -> int:
    """Participants who consented hold a seat against `Study.max_participants`, until they time
    out or return (SEAT_FREED); finishing keeps it (their work fills the place).

    `up_to`: count no further (a count of at most that many rows).
    """
    seated = study.participants.filter(consent_at__isnull=False).exclude(status__in=SEAT_FREED).order_by()
    return (seated[:up_to] if up_to is not None else seated).count()


def closed_reason(study: Study) -> str:
    """Why a study that takes nobody now says so: "paused" (it reopens) or "closed"."""
    return "paused" if study.status == Study.Status.PAUSED else "closed"


def ensure_open_for_newcomers(study: Study) -> None:
    """Raise StudyUnavailable unless a new participant could start annotating now."""
    if not study.is_accepting_participants:
        raise StudyUnavailable(closed_reason(study))
    cap = study.max_participants
    if cap is not None and seats_taken(study, up_to=cap) >= cap:
        raise StudyUnavailable("full")
    if not _count_open(study, 1):
        raise StudyUnavailable("full")


def _ensure_open_releasing(study: Study) -> None:
    """`ensure_open_for_newcomers`, trying again once abandoned tasks have freed their places."""
    try:
        ensure_open_for_newcomers(study)
    except StudyUnavailable as exc:
        if exc.reason != "full" or not release_expired_assignments(study=study):
            raise
        ensure_open_for_newcomers(study)


class AlreadyJoined(Exception):
    """This Prolific PID already has a participant: only the browser it joined with (or its
    resume link) may continue it, so a stranger who knows the PID can't take it over."""


class TooManyJoins(Exception):
    """The client created `UALIGN_JOIN_LIMIT` participants in this study within the window."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many new participants from this client; retry in {retry_after} s")
        self.retry_after = retry_after  # seconds


def check_join_rate(*, study: Study, client_key: str, now: datetime | None = None) -> None:
    """Raise TooManyJoins when this client already created the limit of participants lately.

    Counted on the Participant rows themselves (indexed by study, client key and time), so the
    limit holds across web processes and hosts and survives restarts, with no cache to run.
    Concurrent joins from one client may pass it by at most the number in flight at once.
    """
    limit, window = settings.UALIGN_JOIN_LIMIT, timedelta(seconds=settings.UALIGN_JOIN_WINDOW_SECONDS)
    if not limit or not client_key:
        return
    now = now or timezone.now()
    recent = Participant.objects.filter(study=study, client_key=client_key, created_at__gte=now - window)
    times = list(recent.order_by("-created_at").values_list("created_at", flat=True)[:limit])
    if len(times) >= limit:
        raise TooManyJoins(retry_after=max(1, math.ceil((times[-1] + window - now).total_seconds())))


@transaction.atomic
def join_study(
    *,
    study: Study,
    prolific_pid: str = "",
    prolific_study_id: str = "",
    prolific_session_id: str = "",
    client_key: str = "",
    is_simulated: bool = False,
) -> Participant:
    """Create a participant for a newcomer; the caller binds it to their browser.

    Raises AlreadyJoined for a Prolific PID the study already has (including two joins of one
    PID racing), StudyUnavailable when the study is closed or full, and TooManyJoins past the
    per-client rate limit (`check_join_rate`).
    """
    if study.is_pilot and not is_simulated:  # a pilot copy (studies/pilots.py) is never open to people
        raise StudyUnavailable("closed")
    if prolific_pid and Participant.objects.filter(study=study, external_id=prolific_pid).exists():
        raise AlreadyJoined()
    check_join_rate(study=study, client_key=client_key)
    _ensure_open_releasing(study)  # abandoned tasks free places for newcomers
    fields = {"study": study, "external_id": prolific_pid, "client_key": client_key, "is_simulated": is_simulated}
    if prolific_pid:
        fields |= {"prolific_study_id": prolific_study_id, "prolific_session_id": prolific_session_id}
    try:
        with transaction.atomic():
            return Participant.objects.create(**fields)
    except IntegrityError:
        raise AlreadyJoined() from None  # the same PID joined at the same moment elsewhere


# --- Before the tasks ---------------------------------------------------------------------


@transaction.atomic
def record_consent(*, participant: Participant, accepted: bool, now: datetime | None = None) -> Participant:
    """Store the consent time (or the refusal). The seat check runs under the study's row lock."""
    participant = Participant.objects.select_for_update(no_key=True).get(pk=participant.pk)
    if participant.status != Participant.Status.JOINED:
        return participant  # answered already (a resubmitted form)
    if not accepted:
        participant.status = Participant.Status.DECLINED
        participant.save(update_fields=["status"])
        return participant
    study = Study.objects.select_for_update(no_key=True).get(pk=participant.study_id)  # seats, one at a time
    _ensure_open_releasing(study)
    participant.consent_at = participant.last_active_at = now or timezone.now()
    participant.status = Participant.Status.CONSENTED
    participant.save(update_fields=["consent_at", "last_active_at", "status"])
    return participant


@transaction.atomic
def start_tasks(*, participant: Participant, comprehension_answer: str | None = None) -> Participant:
    """Leave the instructions: check the comprehension answer if the study asks one.

    A wrong answer uses one of two attempts; after the second the participant is screened out.
    """
    participant = Participant.objects.select_for_update(of=("self",), no_key=True).select_related("study").get(pk=participant.pk)
    if participant.status != Participant.Status.CONSENTED:
        return participant
    study = participant.study
    if study.comprehension_question and not participant.comprehension_passed:
        participant.comprehension_attempts += 1
        if comprehension_answer == study.comprehension_answer:
            participant.comprehension_passed = True
        elif participant.comprehension_attempts >= COMPREHENSION_ATTEMPTS:
            participant.status = Participant.Status.SCREENED_OUT
        participant.save(update_fields=["comprehension_attempts", "comprehension_passed", "status"])
        if not participant.comprehension_passed:
            return participant
    participant.status = Participant.Status.ACTIVE
    participant.last_active_at = timezone.now()
    participant.save(update_fields=["status", "last_active_at"])
    return participant


# --- Assignment ---------------------------------------------------------------------------


@transaction.atomic
def release_expired_assignments(*, study: Study, now: datetime | None = None) -> int:
    """Release assignments older than the study's timeout; their items become available again.

    The participant who abandoned one keeps the released row, so they never get it again. Rows
    locked by a pick being saved right now are skipped (that pick wins; see record_judgment).
    This and `release_open_assignments` are the only code that releases assignments: both give
    their places back on the items' counters (`_release`).
    """
    cutoff = (now or timezone.now()) - study.assignment_timeout
    expired = Assignment.objects.filter(status=Assignment.Status.ASSIGNED, assigned_at__lt=cutoff, item__study=study)
    return _release(expired, skip_locked=True)


@transaction.atomic
def release_open_assignments(*, study: Study | None = None, participant_ids: list[int] | None = None) -> int:
    """Release every open assignment of a study (it closes) or of some participants (they timed
    out or returned: studies/judgment/participants.py), with the counters. Waits for a pick in flight on
    one of them; once it is saved, that assignment is completed and no longer released."""
    if study is None and participant_ids is None:
        raise ValueError("release_open_assignments needs a study or participant ids")
    open_ = Assignment.objects.filter(status=Assignment.Status.ASSIGNED)
    if study is not None:
        open_ = open_.filter(item__study=study)
    if participant_ids is not None:
        open_ = open_.filter(participant_id__in=participant_ids)
    return _release(open_, skip_locked=False)


def _release(assignments: QuerySet[Assignment], *, skip_locked: bool) -> int:
    """Mark these open assignments released (locking them first) and take their places and
    rotations off their items' counters, under the items' row locks (in pk order)."""
    if skip_locked and connection.features.has_select_for_update_skip_locked:
        assignments = assignments.select_for_update(skip_locked=True, of=("self",), no_key=True)
    else:
        assignments = assignments.select_for_update(of=("self",), no_key=True)
    rows = list(assignments.values_list("pk", "item_id", "display_order"))
    if not rows:
        return 0
    Assignment.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(status=Assignment.Status.RELEASED)
    firsts: dict[int, list[int | None]] = defaultdict(list)
    for _, item_id, order in rows:
        firsts[item_id].append(order[0] if order else None)
    items = list(
        ComparisonItem.objects.select_for_update(no_key=True).filter(pk__in=firsts).order_by("pk")
        .only("pk", "live_assignments", "rotation_use")
    )  # fmt: skip
    for item in items:
        item.live_assignments = max(0, item.live_assignments - len(firsts[item.pk]))
        use = Counter(item.rotation_use)
        use.subtract(str(first) for first in firsts[item.pk] if first is not None)
        item.rotation_use = {key: n for key, n in use.items() if n > 0}
    ComparisonItem.objects.bulk_update(items, ["live_assignments", "rotation_use"])
    return len(rows)


def _open_items(study: Study, attention: bool) -> QuerySet[ComparisonItem]:
    """Items of one kind (attention check or not) that need judging with quota left, fewest live
    assignments first, then shuffled: a range of the `item_open_slots` index, read in its order.
    (The annotator's path reads them in SQL, `_OPEN_SQL`; this is for everyone else.)"""
    return ComparisonItem.objects.filter(
        study=study,
        needs_judgment=True,
        is_attention_check=attention,
        live_assignments__lt=study.annotations_per_item,
    ).order_by("live_assignments", "spread")


# Open items of one kind that one participant was never assigned (released ones included): the
# `item_open_slots` index's range, less the participant's own assignments. Parameters: study id,
# attention (bool), quota, participant id.
_OPEN_SQL = (
    "{items} WHERE i.study_id = %s AND i.needs_judgment AND i.is_attention_check = %s AND i.live_assignments < %s"
    " AND NOT EXISTS (SELECT 1 FROM {assignments} WHERE x.participant_id = %s AND x.item_id = i.id)"
)


@cache
def _open_sql(select: str, items: str) -> str:
    return f"SELECT {select} FROM " + _OPEN_SQL.format(items=items, assignments=sql.columns(Assignment, "x").table)


@cache
def _count_sql() -> str:
    # In the index's order, so that PostgreSQL walks it and stops at the limit.
    return f"SELECT count(*) FROM ({_open_sql('1', _I.table)} ORDER BY i.live_assignments, i.spread LIMIT %s) t"


def _count_open(study: Study, limit: int, participant: Participant | None = None,
                kinds: tuple[bool, ...] = (False, True)) -> int:
    """Open items (unseen by `participant`, if given), counted up to `limit`: regular items first,
    attention checks only when those fall short (near the end of a study); `kinds`: only these
    (is_attention_check). Each kind is read in index order and stops at the limit: however many
    items the study has, and whatever the planner estimates, no query reads them all."""
    counted = 0
    for attention in kinds:
        if participant is None:
            counted += _open_items(study, attention).values("pk")[: limit - counted].count()
        else:
            row = sql.fetch_one(_count_sql(), [study.pk, attention, study.annotations_per_item, participant.pk, limit - counted])
            counted += row[0] if row else 0
        if counted >= limit:
            break
    return counted


def _attention_due(study: Study, done: int, attention_done: int) -> bool:
    """Whether the next task should be an attention check, spreading them at the study's rate."""
    return attention_done < math.floor((done + 1) * study.attention_check_rate + 0.5)


@dataclass(frozen=True)
class _Done:
    """A participant's completed tasks, and how many of them were attention checks."""

    tasks: int
    attention: int

    @classmethod
    def of(cls, participant: Participant) -> _Done:
        return cls(participant.tasks_done, participant.attention_checks_done)


@cache
def _participant_sql(where: str, *, lock: bool) -> str:
    return (
        f"SELECT {_P.sql}, {_S.sql} FROM {_P.table} JOIN {_S.table} ON s.id = p.study_id WHERE {where}"
        + (sql.locking("p") if lock else "")
    )


def _participant_row(row: tuple) -> Participant:
    """The participant, with their study, of a `_participant_sql` row."""
    participant = _P.load(row)
    participant.study = _S.load(row, len(_P))
    return participant


def find_participant(*, study_id: int, slug: str, access_token: str) -> Participant | None:
    """The participant a browser's token names, with their study (one query)."""
    query = _participant_sql("p.study_id = %s AND s.slug = %s AND p.access_token = %s", lock=False)
    row = sql.fetch_one(query, [study_id, slug, access_token])
    return None if row is None else _participant_row(row)


def _locked_participant(participant: Participant) -> tuple[Participant, _Done]:
    """The participant's row, locked, with their study and what they did (one query)."""
    row = sql.fetch_one(_participant_sql("p.id = %s", lock=True), [participant.pk])
    if row is None:
        raise Participant.DoesNotExist()
    locked = _participant_row(row)
    return locked, _Done.of(locked)


def _balanced_order(item: ComparisonItem, canonical: list[int]) -> list[int]:
    """The least-used cyclic rotation of the canonical slot order among the item's live annotators
    (`rotation_use`: how many live assignments show each ItemCandidate first)."""
    use = item.rotation_use or {}
    rotation = min(range(len(canonical)), key=lambda r: (use.get(str(canonical[r]), 0), r))
    return canonical[rotation:] + canonical[:rotation]


@cache
def _shown_sql() -> str:
    return (
        f"SELECT {_IC.sql}, {_C.sql} FROM {_IC.table} JOIN {_C.table} ON c.id = ic.candidate_id"
        " WHERE ic.item_id = %s ORDER BY ic.slot"
    )


def _shown(item: ComparisonItem) -> list[ItemCandidate]:
    """The item's shown texts in canonical slot order, with their candidates (one query, then
    kept on the item)."""
    cached = getattr(item, "_shown_rows", None)
    if cached is None:
        cached = [_shown_row(item, row, 0, _C) for row in sql.fetch(_shown_sql(), [item.pk])]
        item._shown_rows = cached  # type: ignore[attr-defined]
    return cached


@cache
def _count_place_sql() -> str:
    return (
        f"UPDATE {sql.quote(ComparisonItem._meta.db_table)}"
        " SET live_assignments = live_assignments + 1, rotation_use = %s WHERE id = %s"
    )


def _assign(participant: Participant, item: ComparisonItem, *, now: datetime, shown_now: bool) -> Assignment:
    """Give the locked `item` to the participant and count the place taken on the item."""
    order = _balanced_order(item, [shown.pk for shown in _shown(item)])
    assignment = sql.insert(Assignment(
        participant=participant, item=item, display_order=order, assigned_at=now, rendered_at=now if shown_now else None
    ))  # fmt: skip
    first = str(order[0])
    item.rotation_use = {**(item.rotation_use or {}), first: (item.rotation_use or {}).get(first, 0) + 1}
    item.live_assignments += 1
    sql.execute(
        _count_place_sql(),
        [sql.prep(ComparisonItem, "rotation_use", item.rotation_use), item.pk],
    )
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
    a waiting claim locks rows in primary-key order, the order in which `_release` locks them,
    so two waiters never hold each other's next row.
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
    order = "i.live_assignments, i.spread" if in_index_order else "i.id"
    claim = _open_sql(_I.sql, _I.table) + f" ORDER BY {order} LIMIT 1" + sql.locking("i", skip_locked=skip_locked)
    others = (
        f"(SELECT count(*) FROM ({_open_sql('1', _I.table)} AND i.id <> (SELECT id FROM claimed)"
        " ORDER BY i.live_assignments, i.spread LIMIT %s) t)"
    )
    return (
        f"WITH claimed AS ({claim}) SELECT {_I.sql}, {_PR.sql}, {_IC.sql}, {_C.sql}, {others}"
        f" FROM claimed i JOIN {_PR.table} ON pr.id = i.prompt_id JOIN {_IC.table} ON ic.item_id = i.id"
        f" JOIN {_C.table} ON c.id = ic.candidate_id ORDER BY ic.slot"
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
    item = _I.load(rows[0])
    item.prompt = _PR.load(rows[0], len(_I))
    if item.live_assignments >= quota:
        return None
    at = len(_I) + len(_PR)
    item._shown_rows = [_shown_row(item, row, at, _C) for row in rows]  # type: ignore[attr-defined]
    assignment = _assign(participant, item, now=now, shown_now=shown_now)
    assignment.items_left = rows[0][-1]  # type: ignore[attr-defined]
    return assignment


def _shown_row(item: ComparisonItem, row: tuple, start: int, candidate: sql.Columns[Candidate]) -> ItemCandidate:
    """The ItemCandidate whose columns start at `row[start]`, with its candidate after them."""
    shown = _IC.load(row, start)
    shown.candidate = candidate.load(row, start + len(_IC))
    shown.item = item
    return shown


def _assign_next(participant: Participant, done: _Done, *, now: datetime, shown_now: bool) -> Assignment | None:
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
        if attempt or not release_expired_assignments(study=participant.study, now=now):
            return None
    return None


def current_assignment(participant: Participant) -> Assignment | None:
    """The participant's open assignment (at most one: they are handed out under their row lock)."""
    return (
        participant.assignments.filter(status=Assignment.Status.ASSIGNED)
        .select_related("item__prompt").order_by("id").first()
    )  # fmt: skip


def completed_count(participant: Participant) -> int:
    return participant.assignments.filter(status=Assignment.Status.COMPLETED).count()


@transaction.atomic
def assign_next_item(*, participant: Participant, now: datetime | None = None, shown_now: bool = False) -> Assignment | None:
    """The participant's open assignment, or a new one; None when they have nothing left to do.

    Returns None when the participant is finished, has done `items_per_participant`, or no
    item with quota left remains that they haven't seen (the study ran out). `shown_now`: the
    caller displays a new assignment at once, so its render time is now (no second write).
    """
    now = now or timezone.now()
    participant, done = _locked_participant(participant)
    if participant.status != Participant.Status.ACTIVE:
        return None
    open_assignment = current_assignment(participant)
    if open_assignment is not None:
        return open_assignment
    study = participant.study
    if not study.is_accepting_participants or done.tasks >= study.items_per_participant:
        return None
    assignment = _assign_next(participant, done, now=now, shown_now=shown_now)
    if assignment is not None:
        _active(participant, now)
    return assignment


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
    by_id = {shown.pk: shown for shown in _shown(assignment.item)}
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
    done = completed_count(participant) if done is None else done
    pending = (current_assignment(participant) is not None) if pending is None else pending
    room = study.items_per_participant - done - int(pending)
    if room <= 0:
        return Progress(done=done, total=study.items_per_participant)
    if not study.is_accepting_participants:
        left = 0
    elif left is None:
        left = _count_open(study, room, participant)
    elif left < room:
        left += _count_open(study, room - left, participant, kinds=(True,))
    left = min(room, left)
    return Progress(done=done, total=done + int(pending) + left)


# --- Judgments ----------------------------------------------------------------------------


def _credit(item: ComparisonItem, chosen: ItemCandidate | None, study: Study) -> float | None:
    """The credit stored on a judgment (`workers.policies.credit.judgment_credit`); None on
    attention checks and for a "can't decide" the study excludes."""
    if item.is_attention_check:
        return None
    return judgment_credit(
        None if chosen is None else chosen.count_policy,
        None if chosen is None else chosen.count_opponent,
        k=item.k,
        m=item.m,
        cant_decide_as_tie=study.cant_decide_analysis == Study.CantDecide.TIE,
    )


def _reclaim(assignment: Assignment, study: Study) -> None:
    """A pick for a timed-out assignment counts if its item still has room; else it is lost.

    Rare (only picks that arrive after a timeout), so the live assignments are counted on the
    locked item rather than read from its counter; the counters then take the place back.
    """
    item = ComparisonItem.objects.select_for_update(no_key=True).only("pk", "rotation_use").get(pk=assignment.item_id)
    if Assignment.objects.filter(LIVE_ASSIGNMENT, item_id=item.pk).count() >= study.annotations_per_item:
        raise AssignmentLost()
    use = dict(item.rotation_use or {})
    if assignment.display_order:
        first = str(assignment.display_order[0])
        use[first] = use.get(first, 0) + 1
    ComparisonItem.objects.filter(pk=item.pk).update(live_assignments=F("live_assignments") + 1, rotation_use=use)


def _chosen(assignment: Assignment, study: Study, position: int | None, cant_decide: bool) -> ItemCandidate | None:
    """The shown text at displayed `position` (from 1), or None for an allowed "can't decide"."""
    item = assignment.item
    if cant_decide:
        if not study.allow_cant_decide or item.is_attention_check:
            raise InvalidChoice("Can't decide is not an option here.")
        return None
    shown = {row.pk: row for row in _shown(item)}
    order = assignment.display_order or list(shown)
    if position is None or not 1 <= position <= len(order) or order[position - 1] not in shown:
        raise InvalidChoice("Choose one of the shown responses.")
    return shown[order[position - 1]]


@dataclass(frozen=True)
class Browser:
    """The participant a browser joined as, by what its signed cookie holds (studies/views.py):
    the study's id (the cookie's name), the study's slug (the URL) and the access token."""

    study_id: int
    slug: str
    access_token: str


@cache
def _locked_assignment_sql(by_browser: bool) -> str:
    whose = ("p.study_id = %s AND s.slug = %s AND p.access_token = %s AND p.status = %s" if by_browser
             else "a.participant_id = %s")  # fmt: skip
    return (
        f"SELECT {_A.sql}, {_I.sql}, {_P.sql}, {_S.sql}, {_IC.sql}, {_CK.sql}"
        f" FROM {_A.table} JOIN {_I.table} ON i.id = a.item_id JOIN {_P.table} ON p.id = a.participant_id"
        f" JOIN {_S.table} ON s.id = p.study_id JOIN {_IC.table} ON ic.item_id = a.item_id"
        f" JOIN {_CK.table} ON c.id = ic.candidate_id WHERE a.id = %s AND {whose} ORDER BY ic.slot"
        + sql.locking("a, p")
    )


def _locked_assignment(participant: Participant | Browser, assignment_id: int) -> Assignment:
    """The participant's assignment with its item (and the texts it shows, which need not be
    read: only whether each is an attention check's broken one), the participant and their study,
    the assignment and participant rows locked (one query). `participant` may be the browser's
    key instead, for an active participant only. Raises Assignment.DoesNotExist."""
    # Both rows in one statement: nothing else locks a participant's assignment and then their row.
    if isinstance(participant, Browser):
        whose = [participant.study_id, participant.slug, participant.access_token, Participant.Status.ACTIVE.value]
        rows = sql.fetch(_locked_assignment_sql(True), [assignment_id, *whose])
    else:
        rows = sql.fetch(_locked_assignment_sql(False), [assignment_id, participant.pk])
    if not rows:
        raise Assignment.DoesNotExist()
    row = rows[0]
    assignment = _A.load(row)
    assignment.item = item = _I.load(row, len(_A))
    locked = _P.load(row, len(_A) + len(_I))
    locked.study = _S.load(row, len(_A) + len(_I) + len(_P))
    assignment.participant = locked
    at = len(_A) + len(_I) + len(_P) + len(_S)
    item._shown_rows = [_shown_row(item, row, at, _CK) for row in rows]  # type: ignore[attr-defined]
    return assignment


def record_judgment(
    *,
    participant: Participant | Browser,
    assignment_id: int,
    position: int | None,
    cant_decide: bool = False,
    rationale: str = "",
    now: datetime | None = None,
    assign_next: bool = False,
    shown_now: bool = False,
) -> JudgmentResult:
    """Save one pick exactly once. `position` is the displayed position, from 1.

    A second call for the same assignment returns the first judgment unchanged. Raises
    Assignment.DoesNotExist for someone else's assignment, InvalidChoice for a bad position,
    AssignmentLost when a timed-out assignment's item was filled meanwhile. `participant` may be
    a `Browser`: the active participant it names, found and locked with the assignment (the
    annotator's pick, one statement fewer); DoesNotExist too when there is none.

    `assign_next`: in the same transaction, also hand out the participant's next task (the pick's
    round trip: `JudgmentResult.next_assignment`, displayed at once when `shown_now`).
    """
    now = now or timezone.now()
    try:
        with transaction.atomic():
            return _record(participant=participant, assignment_id=assignment_id, position=position,
                           cant_decide=cant_decide, rationale=rationale, now=now, assign_next=assign_next,
                           shown_now=shown_now)  # fmt: skip
    except IntegrityError:
        # Only a judgment saved without the assignment's lock can get here; the first one stands.
        return JudgmentResult(Judgment.objects.get(assignment_id=assignment_id), created=False)


def _record(*, participant: Participant | Browser, assignment_id: int, position: int | None, cant_decide: bool,
            rationale: str, now: datetime, assign_next: bool, shown_now: bool) -> JudgmentResult:
    assignment = _locked_assignment(participant, assignment_id)
    if assignment.status == Assignment.Status.COMPLETED:
        existing = Judgment.objects.filter(assignment=assignment).first()
        if existing is not None:
            return JudgmentResult(existing, created=False)
    participant, study, item = assignment.participant, assignment.participant.study, assignment.item
    done = _Done.of(participant)
    chosen = _chosen(assignment, study, position, cant_decide)
    if assignment.status == Assignment.Status.RELEASED:
        _reclaim(assignment, study)
    attention_passed = None
    if item.is_attention_check and chosen is not None:
        attention_passed = not chosen.candidate.is_attention_check
    latency = None
    if assignment.rendered_at is not None:
        latency = max(0, round((now - assignment.rendered_at).total_seconds() * 1000))
    judgment = sql.insert(Judgment(
        assignment=assignment,
        chosen_slot=None if chosen is None else position,
        chosen=chosen,
        cant_decide=cant_decide,
        credit=_credit(item, chosen, study),
        attention_passed=attention_passed,
        rationale=rationale.strip()[:5000],
        latency_ms=latency,
        rendered_at=assignment.rendered_at,
    ))  # fmt: skip
    assignment.status = Assignment.Status.COMPLETED
    assignment.completed_at = now
    sql.update(assignment, ["status", "completed_at"])
    done = _Done(done.tasks + 1, done.attention + int(item.is_attention_check))
    next_assignment = _after_judgment(participant=participant, done=done, attention_passed=attention_passed, now=now,
                                      assign_next=assign_next, shown_now=shown_now)  # fmt: skip
    return JudgmentResult(judgment, created=True, participant=participant, next_assignment=next_assignment,
                          done=done.tasks)  # fmt: skip


def _after_judgment(*, participant: Participant, done: _Done, attention_passed: bool | None, now: datetime,
                    assign_next: bool, shown_now: bool) -> Assignment | None:
    """Count a failed attention check (ending the session at the study's limit), then give the
    participant their next task or, when their share is done or the study has nothing left they
    haven't seen, the completion code: they did the work and get it now, not on a later page."""
    study = participant.study
    # One UPDATE of the (locked) participant row per pick: what they did, their activity (for the
    # sweep that times out idle participants, #12), and a failed attention check, if any.
    participant.last_active_at = now
    participant.tasks_done, participant.attention_checks_done = done.tasks, done.attention
    fields = ["last_active_at", "tasks_done", "attention_checks_done"]
    if attention_passed is False:
        participant.attention_failures += 1
        fields.append("attention_failures")
        if study.max_attention_failures and participant.attention_failures >= study.max_attention_failures:
            participant.status = Participant.Status.ENDED
            fields.append("status")
    sql.update(participant, fields)
    if participant.status != Participant.Status.ACTIVE:
        return None
    next_assignment = None
    if done.tasks < study.items_per_participant:
        if assign_next and study.is_accepting_participants:
            next_assignment = _assign_next(participant, done, now=now, shown_now=shown_now)
            if next_assignment is not None:
                return next_assignment
        elif _count_open(study, 1, participant):
            return None
    complete_participant(participant=participant, now=now)
    return None


def complete_participant(*, participant: Participant, now: datetime | None = None) -> Participant:
    """Give the study's completion code to an active participant who has done their share."""
    if participant.status == Participant.Status.ACTIVE:
        participant.status = Participant.Status.COMPLETED
        participant.completion_code = participant.study.completion_code
        participant.completed_at = now or timezone.now()
        participant.save(update_fields=["status", "completion_code", "completed_at"])
    return participant


@transaction.atomic
def finish_if_out_of_tasks(*, participant: Participant) -> Participant:
    """When the study runs out before a participant's share: complete them if they did any
    work (they get the code), else leave them as they are (the view says the study is full)."""
    participant, done = _locked_participant(participant)
    if participant.status == Participant.Status.ACTIVE and done.tasks > 0 and current_assignment(participant) is None:
        complete_participant(participant=participant)
    return participant
