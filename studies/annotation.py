"""The participant flow: join, consent, comprehension, assignment, judgments, completion.

These are the cross-model workflows behind the annotator's pages (`studies/views.py`). Every
function is keyword-only and atomic. The rules they keep:

- a Prolific PID joins once (`join_study` raises AlreadyJoined after that: only the browser it
  joined with, or its resume link, continues it), and one client creates at most
  `UALIGN_JOIN_LIMIT` participants per study and window (`check_join_rate`);

- each item gets at most `Study.annotations_per_item` live assignments (assigned or completed),
  even with concurrent participants: the item row is locked before its quota is counted
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
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from studies.models import (
    Assignment,
    ComparisonItem,
    ItemCandidate,
    Judgment,
    Participant,
    Study,
)
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
# Statuses that give a consented participant's seat back (studies/participants.py sets them).
SEAT_FREED = (Participant.Status.TIMED_OUT, Participant.Status.RETURNED)
COMPREHENSION_ATTEMPTS = 2


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
    judgment: Judgment
    created: bool


# --- Joining ------------------------------------------------------------------------------


def is_valid_invite(study: Study, token: str) -> bool:
    return bool(token) and hmac.compare_digest(token.encode(), study.invite_token.encode())


def seats_taken(study: Study) -> int:
    """Participants who consented hold a seat against `Study.max_participants`, until they time
    out or return (SEAT_FREED); finishing keeps it (their work fills the place)."""
    return study.participants.filter(consent_at__isnull=False).exclude(status__in=SEAT_FREED).count()


def closed_reason(study: Study) -> str:
    """Why a study that takes nobody now says so: "paused" (it reopens) or "closed"."""
    return "paused" if study.status == Study.Status.PAUSED else "closed"


def ensure_open_for_newcomers(study: Study) -> None:
    """Raise StudyUnavailable unless a new participant could start annotating now."""
    if not study.is_accepting_participants:
        raise StudyUnavailable(closed_reason(study))
    if study.max_participants is not None and seats_taken(study) >= study.max_participants:
        raise StudyUnavailable("full")
    if not _open_items(study).exists():
        raise StudyUnavailable("full")


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
    release_expired_assignments(study=study)  # abandoned tasks free places for newcomers
    ensure_open_for_newcomers(study)
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
    ensure_open_for_newcomers(study)
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


def release_expired_assignments(*, study: Study, now: datetime | None = None) -> int:
    """Release assignments older than the study's timeout; their items become available again.

    The participant who abandoned one keeps the released row, so they never get it again. Rows
    locked by a pick being saved right now are skipped (that pick wins; see record_judgment).
    """
    cutoff = (now or timezone.now()) - study.assignment_timeout
    expired = Assignment.objects.filter(item__study=study, status=Assignment.Status.ASSIGNED, assigned_at__lt=cutoff)
    if connection.features.has_select_for_update_skip_locked:
        expired = expired.select_for_update(skip_locked=True, of=("self",), no_key=True)
    ids = list(expired.values_list("pk", flat=True))
    if not ids:
        return 0
    return Assignment.objects.filter(pk__in=ids, status=Assignment.Status.ASSIGNED).update(
        status=Assignment.Status.RELEASED
    )


def _open_items(study: Study):
    """Items that need judging with quota left, annotated with `taken` (their live assignments)."""
    return (
        ComparisonItem.objects.filter(study=study, needs_judgment=True)
        .annotate(taken=Count("assignments", filter=Q(assignments__status__in=[Assignment.Status.ASSIGNED, Assignment.Status.COMPLETED])))
        .filter(taken__lt=study.annotations_per_item)
    )


def _available_items(participant: Participant):
    return _open_items(participant.study).exclude(assignments__participant=participant)


def _attention_due(study: Study, done: int, attention_done: int) -> bool:
    """Whether the next task should be an attention check, spreading them at the study's rate."""
    return attention_done < math.floor((done + 1) * study.attention_check_rate + 0.5)


def _spread(participant_id: int, item_id: int) -> bytes:
    """A stable per-participant shuffle, so concurrent newcomers start on different items."""
    return hashlib.blake2b(f"{participant_id}:{item_id}".encode(), digest_size=8).digest()


def _preference_order(participant: Participant) -> list[int]:
    """Available item ids, best first: attention checks when due (else last), fewest live
    assignments, prompts this participant has seen least, then a per-participant shuffle."""
    mine = list(participant.assignments.exclude(status=Assignment.Status.RELEASED).values_list(
        "item__prompt_id", "item__is_attention_check"
    ))
    prompt_seen = Counter(prompt_id for prompt_id, _ in mine)
    attention_due = _attention_due(participant.study, len(mine), sum(1 for _, att in mine if att))
    rows = _available_items(participant).values_list("id", "prompt_id", "is_attention_check", "taken")
    return [
        row[0]
        for row in sorted(
            rows,
            key=lambda r: (r[2] != attention_due, r[3], prompt_seen[r[1]], _spread(participant.pk, r[0])),
        )
    ]


def _lock_item(item_id: int, *, wait: bool) -> ComparisonItem | None:
    """Lock an item row before counting its quota; None if busy and `wait` is false.

    SQLite has no row locks, but its write transaction (BEGIN IMMEDIATE) already serialises us.
    """
    items = ComparisonItem.objects.filter(pk=item_id)
    if connection.features.has_select_for_update_skip_locked and not wait:
        return items.select_for_update(skip_locked=True, no_key=True).first()
    return items.select_for_update(no_key=True).first()


def _try_assign(participant: Participant, item_id: int, *, wait: bool, now: datetime) -> Assignment | bool:
    """Assign the item if it still has quota: the Assignment, False if full, True if busy.

    Each try runs in a savepoint, so a rejected item's row lock is released at once and a
    participant never holds one item while waiting for another (no deadlocks).
    """
    with transaction.atomic():
        item = _lock_item(item_id, wait=wait)
        if item is None:
            return True
        if item.assignments.filter(LIVE_ASSIGNMENT).count() < participant.study.annotations_per_item:
            return Assignment.objects.create(
                participant=participant, item=item, display_order=_balanced_order(item), assigned_at=now
            )
        transaction.set_rollback(True)
        return False


def _balanced_order(item: ComparisonItem) -> list[int]:
    """The least-used cyclic rotation of the canonical slot order among live annotators."""
    canonical = list(item.shown.order_by("slot").values_list("id", flat=True))
    used = Counter(
        order[0]
        for order in item.assignments.filter(LIVE_ASSIGNMENT).values_list("display_order", flat=True)
        if order
    )
    rotation = min(range(len(canonical)), key=lambda r: (used[canonical[r]], r))
    return canonical[rotation:] + canonical[:rotation]


def current_assignment(participant: Participant) -> Assignment | None:
    return participant.assignments.filter(status=Assignment.Status.ASSIGNED).order_by("id").first()


def completed_count(participant: Participant) -> int:
    return participant.assignments.filter(status=Assignment.Status.COMPLETED).count()


@transaction.atomic
def assign_next_item(*, participant: Participant, now: datetime | None = None) -> Assignment | None:
    """The participant's open assignment, or a new one; None when they have nothing left to do.

    Returns None when the participant is finished, has done `items_per_participant`, or no
    item with quota left remains that they haven't seen (the study ran out).
    """
    now = now or timezone.now()
    participant = Participant.objects.select_for_update(of=("self",), no_key=True).select_related("study").get(pk=participant.pk)
    study = participant.study
    release_expired_assignments(study=study, now=now)
    if participant.status != Participant.Status.ACTIVE:
        return None
    open_assignment = current_assignment(participant)
    if open_assignment is not None:
        return open_assignment
    if not study.is_accepting_participants or completed_count(participant) >= study.items_per_participant:
        return None
    # First pass: skip items another participant is being given right now (SKIP LOCKED), so
    # concurrent newcomers spread out instead of queueing. Second pass: wait for the busy ones,
    # so nobody is told "nothing left" while an item still has room.
    busy = []
    for item_id in _preference_order(participant):
        outcome = _try_assign(participant, item_id, wait=False, now=now)
        if isinstance(outcome, Assignment):
            return _active(participant, outcome, now)
        if outcome is True:
            busy.append(item_id)
    for item_id in busy:
        outcome = _try_assign(participant, item_id, wait=True, now=now)
        if isinstance(outcome, Assignment):
            return _active(participant, outcome, now)
    return None


def _active(participant: Participant, assignment: Assignment, now: datetime) -> Assignment:
    """Note the participant's activity (the periodic sweep times out the idle ones); pass `assignment` on."""
    Participant.objects.filter(pk=participant.pk).update(last_active_at=now)
    return assignment


def mark_rendered(assignment: Assignment, now: datetime | None = None) -> None:
    """Record the first time the task was shown; the latency runs from here."""
    if assignment.rendered_at is None:
        now = now or timezone.now()
        Assignment.objects.filter(pk=assignment.pk, rendered_at__isnull=True).update(rendered_at=now)
        assignment.refresh_from_db(fields=["rendered_at"])


def shown_in_order(assignment: Assignment) -> list[ItemCandidate]:
    """The item's responses in the order this participant sees them (positions 1..n)."""
    by_id = {shown.pk: shown for shown in assignment.item.shown.select_related("candidate")}
    order = assignment.display_order or sorted(by_id, key=lambda pk: by_id[pk].slot)
    return [by_id[pk] for pk in order]


def progress(participant: Participant) -> Progress:
    """Done out of `items_per_participant`, or fewer when the study runs out."""
    study = participant.study
    done = completed_count(participant)
    pending = 1 if current_assignment(participant) else 0
    if done + pending >= study.items_per_participant:
        return Progress(done=done, total=study.items_per_participant)
    left = _available_items(participant).count() if study.is_accepting_participants else 0
    return Progress(done=done, total=min(study.items_per_participant, done + pending + left))


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
    """A pick for a timed-out assignment counts if its item still has room; else it is lost."""
    _lock_item(assignment.item_id, wait=True)  # rare: only picks that arrive after a timeout
    taken = assignment.item.assignments.filter(LIVE_ASSIGNMENT).count()
    if taken >= study.annotations_per_item:
        raise AssignmentLost()


def _chosen(assignment: Assignment, study: Study, position: int | None, cant_decide: bool) -> ItemCandidate | None:
    """The shown text at displayed `position` (from 1), or None for an allowed "can't decide"."""
    item = assignment.item
    if cant_decide:
        if not study.allow_cant_decide or item.is_attention_check:
            raise InvalidChoice("Can't decide is not an option here.")
        return None
    order = assignment.display_order or list(item.shown.order_by("slot").values_list("id", flat=True))
    if position is None or not 1 <= position <= len(order):
        raise InvalidChoice("Choose one of the shown responses.")
    return ItemCandidate.objects.select_related("candidate").get(pk=order[position - 1], item=item)


@transaction.atomic
def record_judgment(
    *,
    participant: Participant,
    assignment_id: int,
    position: int | None,
    cant_decide: bool = False,
    rationale: str = "",
    now: datetime | None = None,
) -> JudgmentResult:
    """Save one pick exactly once. `position` is the displayed position, from 1.

    A second call for the same assignment returns the first judgment unchanged. Raises
    Assignment.DoesNotExist for someone else's assignment, InvalidChoice for a bad position,
    AssignmentLost when a timed-out assignment's item was filled meanwhile.
    """
    now = now or timezone.now()
    # Lock order participant → assignment → item, as in assign_next_item, so the two never deadlock.
    participant = Participant.objects.select_for_update(of=("self",), no_key=True).select_related("study").get(pk=participant.pk)
    assignment = (
        Assignment.objects.select_for_update(of=("self",), no_key=True)
        .select_related("item", "participant__study")
        .get(pk=assignment_id, participant=participant)
    )
    existing = Judgment.objects.filter(assignment=assignment).first()
    if existing is not None:
        return JudgmentResult(existing, created=False)
    study = assignment.participant.study
    item = assignment.item
    chosen = _chosen(assignment, study, position, cant_decide)
    if chosen is None:
        position = None
    if assignment.status == Assignment.Status.RELEASED:
        _reclaim(assignment, study)
    attention_passed = None
    if item.is_attention_check and chosen is not None:
        attention_passed = not chosen.candidate.is_attention_check
    latency = None
    if assignment.rendered_at is not None:
        latency = max(0, round((now - assignment.rendered_at).total_seconds() * 1000))
    try:
        with transaction.atomic():
            judgment = Judgment.objects.create(
                assignment=assignment,
                chosen_slot=position,
                chosen=chosen,
                cant_decide=cant_decide,
                credit=_credit(item, chosen, study),
                attention_passed=attention_passed,
                rationale=rationale.strip()[:5000],
                latency_ms=latency,
                rendered_at=assignment.rendered_at,
            )
    except IntegrityError:
        return JudgmentResult(Judgment.objects.get(assignment=assignment), created=False)
    assignment.status = Assignment.Status.COMPLETED
    assignment.completed_at = now
    assignment.save(update_fields=["status", "completed_at"])
    _active(participant, assignment, now)
    _after_judgment(participant=participant, study=study, attention_passed=attention_passed, now=now)
    return JudgmentResult(judgment, created=True)


def _after_judgment(*, participant: Participant, study: Study, attention_passed: bool | None, now: datetime) -> None:
    participant.study = study
    if attention_passed is False:
        participant.attention_failures += 1
        participant.save(update_fields=["attention_failures"])
        if study.max_attention_failures and participant.attention_failures >= study.max_attention_failures:
            participant.status = Participant.Status.ENDED
            participant.save(update_fields=["status"])
            return
    if completed_count(participant) >= study.items_per_participant or not _available_items(participant).exists():
        # Their share is done, or the study has nothing left they haven't seen: either way
        # they did the work and get the code now, not on a later page load.
        complete_participant(participant=participant, now=now)


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
    participant = Participant.objects.select_for_update(of=("self",), no_key=True).select_related("study").get(pk=participant.pk)
    if (
        participant.status == Participant.Status.ACTIVE
        and current_assignment(participant) is None
        and completed_count(participant) > 0
    ):
        complete_participant(participant=participant)
    return participant
