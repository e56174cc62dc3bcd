"""Places and participants: who holds a seat, and the moves that free one or end a session.

A participant holds a seat against `Study.max_participants` from consent on, and gives it back
when they time out or return (`flow.seats_taken`, `Participant.SEAT_FREED`), counted on the
study's seat row (`seats`), which `_free` moves in the same transaction. The moves:

- `sweep_study`: what the periodic task `studies.tasks.sweep_abandoned` (celery beat) does for
  each live study: release assignments older than the study's `assignment_timeout` and time out
  the participants idle for longer (`time_out_inactive`), which frees their seats and their
  open assignments. Their picks are kept.
- `return_participants`: the researcher marks participants who returned the study on Prolific;
  their seats and open assignments come back the same way.
- `review_participants`: the researcher's verdict (approve or reject), kept for the CSV that
  `review_csv_rows` writes for Prolific's bulk review.
- `close_out_study` (when a study closes) and `complete_after_close` (a participant who comes
  back after that): everyone who made at least one pick gets the completion code.
- `restart_clocks`: a pause stops the clock, so nobody times out for the researcher's pause.
- `places`: the study page's figures (places filled, participants by status, with times).

Every function that writes is keyword-only and atomic. Rows that a pick is being saved on are
skipped by the sweep (`select_for_update(skip_locked=True)`), so a pick in flight wins.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection, transaction
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from studies.judgment import flow, picking, rules, seats
from studies.models import Participant, Study
from studies.text import safe_text

Status = Participant.Status


@dataclass(frozen=True)
class SweepResult:
    released: int  # assignments given back to their items
    timed_out: int  # participants whose seats were freed


@dataclass(frozen=True)
class BulkChange:
    """What a bulk action of the admin (return, review) did: rows changed, and rows it left as they
    were (not in a state the action applies to, or locked by a pick being saved)."""

    changed: int
    skipped: int


def _free(ids: list[int], status: str) -> int:
    """Give back the open assignments and the seats of these participants (rows locked by the
    caller) and set their (seat-freeing) status: the one place seats are freed."""
    rules.release_open_assignments(participant_ids=ids)  # with the items' counters (#14)
    seats.give_back(ids)  # before the status changes: only those seated now hold a seat
    return Participant.objects.filter(pk__in=ids).update(status=status)


def _plain(participants: QuerySet[Participant]) -> QuerySet[Participant]:
    """The same rows without annotations or ordering (the admin's list adds both), so they can be locked."""
    return Participant.objects.filter(pk__in=list(participants.values_list("pk", flat=True)))


def _locked_ids(participants: QuerySet[Participant]) -> list[int]:
    """Lock the rows (skipping any a pick is being saved on) and return their ids."""
    if connection.features.has_select_for_update_skip_locked:
        participants = participants.select_for_update(skip_locked=True, no_key=True)
    return list(participants.values_list("pk", flat=True))


@transaction.atomic
def time_out_inactive(*, study: Study, now: datetime | None = None) -> int:
    """Time out the participants in progress who were idle past the study's `assignment_timeout`."""
    idle = Participant.objects.filter(study=study, last_active_at__lt=rules.timeout_cutoff(study, now)).in_progress()
    ids = _locked_ids(idle)
    return _free(ids, Status.TIMED_OUT) if ids else 0


@transaction.atomic
def sweep_study(*, study: Study, now: datetime | None = None) -> SweepResult:
    """Release abandoned assignments and free the seats of idle participants of one study."""
    now = now or timezone.now()
    released = rules.release_expired_assignments(study=study, now=now)
    return SweepResult(released=released, timed_out=time_out_inactive(study=study, now=now))


@transaction.atomic
def return_participants(*, participants: QuerySet[Participant]) -> BulkChange:
    """Mark participants as returned on Prolific: their seats and open assignments come back.

    Participants who completed are skipped (their work is done; review them instead).
    """
    chosen = _plain(participants)
    wanted = chosen.count()
    ids = _locked_ids(chosen.exclude(status__in=[Status.COMPLETED, Status.RETURNED]))
    changed = _free(ids, Status.RETURNED) if ids else 0
    return BulkChange(changed=changed, skipped=wanted - changed)


@transaction.atomic
def review_participants(*, participants: QuerySet[Participant], verdict: str, reason: str = "") -> BulkChange:
    """Record the researcher's verdict (approved or rejected) on finished participants.

    A rejection needs its `reason` (Prolific asks for one, and the participant may read it); an
    approval clears any earlier one.
    """
    if verdict not in Participant.REVIEWABLE:
        raise ValueError(f"unknown verdict {verdict!r}")
    reason = reason.strip()
    if verdict == Participant.Review.REJECTED and not reason:
        raise ValueError("a rejection needs a reason")
    chosen = _plain(participants)
    wanted = chosen.count()
    changed = chosen.filter(status__in=Participant.REVIEWABLE[verdict]).update(
        review_status=verdict, review_reason=reason if verdict == Participant.Review.REJECTED else ""
    )
    return BulkChange(changed=changed, skipped=wanted - changed)


def close_out_study(*, study: Study, now: datetime | None = None) -> int:
    """When a study closes: everyone in progress with at least one pick completes (and gets the
    code); every open assignment is released. Returns the number completed. Call it inside the
    transaction that closes the study."""
    now = now or timezone.now()
    workers = Participant.objects.filter(study=study, status=Status.ACTIVE).worked()
    fields = {"status": Status.COMPLETED, "completed_at": now, "last_active_at": now}
    if study.per_participant_codes:  # each their own code: one UPDATE per participant, once per study
        completed = 0
        for participant in workers.only("pk", "pseudonym"):
            code = study.completion_code_for(participant)
            completed += Participant.objects.filter(pk=participant.pk, status=Status.ACTIVE).update(
                completion_code=code, **fields)  # fmt: skip
    else:
        completed = workers.update(completion_code=study.completion_code, **fields)
    rules.release_open_assignments(study=study)  # with the items' counters (#14)
    return completed


@transaction.atomic
def complete_after_close(*, participant: Participant) -> Participant:
    """A participant of a closed study who made a pick (one that landed as it closed) completes."""
    participant = (
        Participant.objects.select_for_update(of=("self",), no_key=True).select_related("study").get(pk=participant.pk)
    )
    if (
        participant.study.status == Study.Status.CLOSED
        and participant.status == Status.ACTIVE
        and rules.has_worked(participant)
    ):
        picking.complete_participant(participant=participant)
    return participant


def restart_clocks(*, study: Study, now: datetime | None = None) -> None:
    """When a paused study reopens, its participants' idle time starts again from now."""
    Participant.objects.filter(study=study).in_progress().update(last_active_at=now or timezone.now())


# --- The study page's figures --------------------------------------------------------------------


@dataclass(frozen=True)
class StatusGroup:
    label: str
    statuses: tuple[str, ...]
    count: int
    last_joined: datetime | None
    last_active: datetime | None
    median_time_on_task: timedelta | None  # per participant: the sum of their picks' latencies


@dataclass(frozen=True)
class Places:
    filled: int
    target: int | None  # max_participants; None for no limit
    groups: list[StatusGroup]

    @property
    def total(self) -> int:
        return sum(group.count for group in self.groups)


GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("Joined, not yet consented", (Status.JOINED,)),
    ("Active", Participant.IN_PROGRESS),
    ("Completed", (Status.COMPLETED,)),
    ("Returned or timed out", Participant.SEAT_FREED),
    ("Screened out", (Status.SCREENED_OUT,)),
    ("Failed attention checks", (Status.ENDED,)),
    ("Declined consent", (Status.DECLINED,)),
]


@dataclass(frozen=True)
class _Row:
    status: str
    created_at: datetime
    last_active_at: datetime
    task_ms: int | None


def _group(label: str, statuses: tuple[str, ...], rows: list[_Row]) -> StatusGroup:
    mine = [row for row in rows if row.status in statuses]
    task = [row.task_ms for row in mine if row.task_ms is not None]
    return StatusGroup(
        label=label,
        statuses=statuses,
        count=len(mine),
        last_joined=max((row.created_at for row in mine), default=None),
        last_active=max((row.last_active_at for row in mine), default=None),
        median_time_on_task=timedelta(milliseconds=statistics.median(task)) if task else None,
    )


def places(study: Study) -> Places:
    """Places filled out of the target, and the participants by status with their times."""
    rows = [
        _Row(*values)
        for values in study.participants.annotate(task_ms=Sum("assignments__judgment__latency_ms")).values_list(
            "status", "created_at", "last_active_at", "task_ms"
        )
    ]
    groups = [_group(label, statuses, rows) for label, statuses in GROUPS]
    return Places(filled=flow.seats_taken(study), target=study.max_participants, groups=groups)


# --- The review list for Prolific ----------------------------------------------------------------

REVIEW_HEADER = (
    "study", "PROLIFIC_PID", "decision", "status", "review_status", "review_reason", "picks", "tasks_done",
    "tasks_offered", "attention_passed", "attention_shown", "attention_failures", "time_on_task_s", "session_s",
    "completion_code", "joined_at", "last_active_at", "completed_at", "participant", "is_simulated",
    "expected_code", "code_ok",
)  # fmt: skip
DECISIONS: dict[str, str] = {Participant.Review.APPROVED: "APPROVE", Participant.Review.REJECTED: "REJECT"}
CENT = Decimal("0.01")


def with_picks(participants: QuerySet[Participant]) -> QuerySet[Participant]:
    """Participants annotated with `picks` (their judgments) and `task_ms` (the sum of latencies)."""
    return participants.annotate(
        picks=Count("assignments__judgment"), task_ms=Sum("assignments__judgment__latency_ms")
    )


@dataclass(frozen=True)
class Work:
    """What a participant did, as the review list shows it: tasks done of the share they were
    offered, attention checks passed of those shown, and time (on tasks, and joined to last seen)."""

    tasks_done: int
    tasks_offered: int
    attention_passed: int
    attention_shown: int
    task_seconds: int | None
    session_seconds: int

    @classmethod
    def of(cls, participant: Participant, task_ms: int | None = None) -> Work:
        session = (participant.completed_at or participant.last_active_at) - participant.created_at
        shown = participant.attention_checks_done
        return cls(
            tasks_done=participant.tasks_done,
            tasks_offered=participant.study.items_per_participant,
            attention_passed=max(0, shown - participant.attention_failures),
            attention_shown=shown,
            task_seconds=None if task_ms is None else round(task_ms / 1000),
            session_seconds=max(0, round(session.total_seconds())),
        )


def review_csv(participants: QuerySet[Participant]) -> str:
    """The approve/reject list as CSV: one row per participant, text cells formula-safe (`text.safe_text`).

    `decision` is APPROVE or REJECT once reviewed (empty before): the column to filter on when
    pasting PROLIFIC_PIDs into Prolific's bulk approval; `review_reason` is the rejection's reason;
    `expected_code` and `code_ok`: the code
    a completed participant should hold, and whether theirs is it (`_code_check`).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REVIEW_HEADER)
    for p in with_picks(participants.select_related("study")).order_by("study_id", "id"):
        picks = p.picks  # type: ignore[attr-defined]  # annotated by with_picks
        work = Work.of(p, p.task_ms)  # type: ignore[attr-defined]
        writer.writerow([
            safe_text(p.study.slug), safe_text(p.external_id), DECISIONS.get(p.review_status, ""), p.status,
            p.review_status, safe_text(p.review_reason), picks, work.tasks_done, work.tasks_offered,
            work.attention_passed, work.attention_shown, p.attention_failures,
            "" if work.task_seconds is None else work.task_seconds, work.session_seconds,
            safe_text(p.completion_code), _iso(p.created_at), _iso(p.last_active_at), _iso(p.completed_at),
            p.pseudonym, "true" if p.is_simulated else "false",
            *_code_check(p),
        ])  # fmt: skip
    return buffer.getvalue()


def _code_check(participant: Participant) -> tuple[str, str]:
    """The code the participant should have been given (`Study.completion_code_for`, recomputed
    now: with per-participant codes it names one person), and whether the stored one matches:
    compare `expected_code` with the code each submission on Prolific carries."""
    if participant.status != Status.COMPLETED:
        return "", ""
    expected = participant.study.completion_code_for(participant)
    return safe_text(expected), "true" if participant.completion_code == expected else "false"


# Sessions whose partial work is paid by a bonus: ended by the close, a timeout or a return, not
# by failed checks (those are rejected instead).
BONUSABLE = (Status.COMPLETED, Status.TIMED_OUT, Status.RETURNED)


def bonus_csv(participants: QuerySet[Participant], *, per_task: Decimal) -> tuple[str, int]:
    """Prolific's bulk-bonus list for partial completers: `<PROLIFIC_PID>,<amount>` lines, no header.

    A partial completer did at least one task and fewer than the share they were offered; the
    amount is `per_task` × tasks done in the study's currency, to the cent (half up). Rejected,
    simulated and non-Prolific participants are left out; returns the text and the lines' count.
    """
    if per_task <= 0:
        raise ValueError("the rate per task must be positive")
    lines = []
    chosen = participants.select_related("study").filter(status__in=BONUSABLE, is_simulated=False, tasks_done__gt=0)
    for p in chosen.exclude(review_status=Participant.Review.REJECTED).order_by("study_id", "id"):
        if p.tasks_done >= p.study.items_per_participant or not flow.PROLIFIC_PID.fullmatch(p.external_id.lower()):
            continue
        amount = (per_task * p.tasks_done).quantize(CENT, rounding=ROUND_HALF_UP)
        lines.append(f"{p.external_id},{amount}\n")
    return "".join(lines), len(lines)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def counts(results: Iterable[SweepResult]) -> SweepResult:
    """The sum of several studies' sweeps."""
    released = timed_out = 0
    for result in results:
        released += result.released
        timed_out += result.timed_out
    return SweepResult(released=released, timed_out=timed_out)
