"""A pick: saved exactly once, its credit, and where it leads (the next task or the completion code).

`pick` is the annotator's pick as one call: it returns an `Outcome` that studies/views.py maps to a
response. `record_judgment` locks the assignment and returns the existing judgment when there is
one (a double click, a resubmitted form, a replayed request); in the same transaction it moves the
participant's counters on, and with `assign_next` hands out their next task
(`assign.claim_next`), so the round trip costs a fixed number of statements whatever the size of
the study (tests/test_annotation_queries.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.db import IntegrityError, transaction
from django.utils import timezone

from studies.judgment import rules, sql
from studies.judgment.assign import (
    CK,
    IC,
    A,
    Done,
    I,
    P,
    S,
    claim_next,
    current_assignment,
    locked_participant,
    shown_row,
    shown_texts,
)
from studies.models import (
    Assignment,
    ComparisonItem,
    ItemCandidate,
    Judgment,
    Participant,
    Study,
)
from workers.policies.credit import judgment_credit


class AssignmentLost(Exception):
    """A pick arrived for an assignment that timed out and whose item has since been filled."""


class StudyNotOpen(Exception):
    """The study takes no pick now: closed, or paused and the task was not open (`rules.takes_pick`)."""


class InvalidChoice(ValueError):
    """The submitted position is not one of the shown responses (or can't-decide isn't allowed)."""



@dataclass(frozen=True)
class JudgmentResult:
    """A saved pick. With `record_judgment(assign_next=True)` a new pick also carries the
    participant as it is now and their next task (None when they are done or none is left)."""

    judgment: Judgment
    created: bool
    participant: Participant | None = None
    next_assignment: Assignment | None = None
    done: int | None = None  # the participant's completed tasks, this pick included



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


def _chosen(assignment: Assignment, study: Study, position: int | None, cant_decide: bool) -> ItemCandidate | None:
    """The shown text at displayed `position` (from 1), or None for an allowed "can't decide"."""
    item = assignment.item
    if cant_decide:
        if not study.allow_cant_decide:
            raise InvalidChoice("Can't decide is not an option here.")
        return None
    shown = {row.pk: row for row in shown_texts(item)}
    order = assignment.display_order or list(shown)
    if position is None or not 1 <= position <= len(order) or order[position - 1] not in shown:
        raise InvalidChoice("Choose one of the shown responses.")
    return shown[order[position - 1]]


@dataclass(frozen=True)
class BrowserKey:
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
        f"SELECT {A.sql}, {I.sql}, {P.sql}, {S.sql}, {IC.sql}, {CK.sql}"
        f" FROM {A.table} JOIN {I.table} ON i.id = a.item_id JOIN {P.table} ON p.id = a.participant_id"
        f" JOIN {S.table} ON s.id = p.study_id JOIN {IC.table} ON ic.item_id = a.item_id"
        f" JOIN {CK.table} ON c.id = ic.candidate_id WHERE a.id = %s AND {whose} ORDER BY ic.slot"
        + sql.locking("a, p")
    )


def _locked_assignment(participant: Participant | BrowserKey, assignment_id: int) -> Assignment:
    """The participant's assignment with its item (and the texts it shows, which need not be
    read: only whether each is an attention check's broken one), the participant and their study,
    the assignment and participant rows locked (one query). `participant` may be the browser's
    key instead, for an active participant only. Raises Assignment.DoesNotExist."""
    # Both rows in one statement: nothing else locks a participant's assignment and then their row.
    if isinstance(participant, BrowserKey):
        whose = [participant.study_id, participant.slug, participant.access_token, Participant.Status.ACTIVE.value]
        rows = sql.fetch(_locked_assignment_sql(True), [assignment_id, *whose])
    else:
        rows = sql.fetch(_locked_assignment_sql(False), [assignment_id, participant.pk])
    if not rows:
        raise Assignment.DoesNotExist()
    row = rows[0]
    assignment = A.load(row)
    assignment.item = item = I.load(row, len(A))
    locked = P.load(row, len(A) + len(I))
    locked.study = S.load(row, len(A) + len(I) + len(P))
    assignment.participant = locked
    at = len(A) + len(I) + len(P) + len(S)
    item.shown_rows = [shown_row(item, row, at, CK) for row in rows]  # type: ignore[attr-defined]
    return assignment


def record_judgment(
    *,
    participant: Participant | BrowserKey,
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
    Assignment.DoesNotExist for someone else's assignment, StudyNotOpen when the study takes no
    pick now (closed; paused and the task not open: `rules.takes_pick`), InvalidChoice for a bad position,
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


def _record(*, participant: Participant | BrowserKey, assignment_id: int, position: int | None, cant_decide: bool,
            rationale: str, now: datetime, assign_next: bool, shown_now: bool) -> JudgmentResult:
    assignment = _locked_assignment(participant, assignment_id)
    if assignment.status == Assignment.Status.COMPLETED:
        existing = Judgment.objects.filter(assignment=assignment).first()
        if existing is not None:
            return JudgmentResult(existing, created=False)
    participant, study, item = assignment.participant, assignment.participant.study, assignment.item
    # The study's status came with the locked read (no statement of its own). A pick whose read
    # waited on Close's lock of the assignment sees it released, with the status read before the
    # wait: that rare path reads the status again before it takes the place back.
    if not rules.takes_pick(study.status, assignment.status):
        raise StudyNotOpen()
    done = Done.of(participant)
    chosen = _chosen(assignment, study, position, cant_decide)
    if assignment.status == Assignment.Status.RELEASED:
        if not rules.takes_pick(rules.study_status_now(study), assignment.status):
            raise StudyNotOpen()
        if not rules.reclaim_place(assignment, study):
            raise AssignmentLost()
    attention_passed = None
    if item.is_attention_check:  # "can't decide" misses it: a careful reader can always tell (#25)
        attention_passed = chosen is not None and not chosen.candidate.is_attention_check
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
    done = Done(done.tasks + 1, done.attention + int(item.is_attention_check))
    next_assignment = _after_judgment(participant=participant, done=done, attention_passed=attention_passed, now=now,
                                      assign_next=assign_next, shown_now=shown_now)  # fmt: skip
    return JudgmentResult(judgment, created=True, participant=participant, next_assignment=next_assignment,
                          done=done.tasks)  # fmt: skip


def _after_judgment(*, participant: Participant, done: Done, attention_passed: bool | None, now: datetime,
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
            next_assignment = claim_next(participant, done, now=now, shown_now=shown_now)
            if next_assignment is not None:
                return next_assignment
        elif rules.count_open(study, 1, participant):
            return None
    complete_participant(participant=participant, now=now)
    return None


def complete_participant(*, participant: Participant, now: datetime | None = None) -> Participant:
    """Give the completion code (`Study.completion_code_for`: the study's, or their own) to an
    active participant who has done their share."""
    if participant.status == Participant.Status.ACTIVE:
        participant.status = Participant.Status.COMPLETED
        participant.completion_code = participant.study.completion_code_for(participant)
        participant.completed_at = now or timezone.now()
        participant.save(update_fields=["status", "completion_code", "completed_at"])
    return participant


@transaction.atomic
def finish_if_out_of_tasks(*, participant: Participant) -> Participant:
    """When the study runs out before a participant's share: complete them if they did any
    work (they get the code), else leave them as they are (the view says the study is full)."""
    participant, done = locked_participant(participant)
    if participant.status == Participant.Status.ACTIVE and done.tasks > 0 and current_assignment(participant) is None:
        complete_participant(participant=participant)
    return participant


class OutcomeKind(enum.Enum):
    """What became of a pick sent by a browser (`pick`)."""

    SAVED = "saved"  # a new judgment; the participant's next task handed out with it
    REPLAYED = "replayed"  # the assignment was judged already: the first judgment stands
    NOT_FOUND = "not_found"  # no active participant of this browser holds that assignment
    INVALID = "invalid"  # not one of the shown positions, or "can't decide" where it isn't allowed
    LOST = "lost"  # the assignment timed out and its item was filled meanwhile
    NOT_OPEN = "not_open"  # the study is closed (or paused and the task was not open): nothing saved


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    result: JudgmentResult | None = None  # SAVED and REPLAYED
    error: str = ""  # INVALID: what to tell the annotator


def pick(*, browsers: Iterable[BrowserKey], assignment_id: int, position: int | None, cant_decide: bool,
         rationale: str, shown_now: bool) -> Outcome:
    """A browser's pick, and in the same transaction the participant's next task (`record_judgment`
    with `assign_next`): the active participant that one of the browser's keys names, found and
    locked with the assignment (one statement). `shown_now`: the next task is displayed at once."""
    for browser in browsers:
        try:
            result = record_judgment(participant=browser, assignment_id=assignment_id, position=position,
                                     cant_decide=cant_decide, rationale=rationale, assign_next=True,
                                     shown_now=shown_now)  # fmt: skip
        except Assignment.DoesNotExist:
            continue
        except InvalidChoice as exc:
            return Outcome(OutcomeKind.INVALID, error=str(exc))
        except AssignmentLost:
            return Outcome(OutcomeKind.LOST)
        except StudyNotOpen:
            return Outcome(OutcomeKind.NOT_OPEN)
        return Outcome(OutcomeKind.SAVED if result.created else OutcomeKind.REPLAYED, result)
    return Outcome(OutcomeKind.NOT_FOUND)
