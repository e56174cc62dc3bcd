"""Joining and the steps before the tasks: invitation, join rate, seats, consent, comprehension.

Every function is keyword-only and atomic. The rules they keep: a Prolific PID joins once
(`join_study` raises AlreadyJoined after that: only the browser it joined with, or its resume
link, continues it); one client creates at most `UALIGN_JOIN_LIMIT` participants per study and
window (`check_join_rate`); consented participants hold a seat against `Study.max_participants`
(`Participant.objects.seated()`), counted on the study's seat row (`seats`: consent takes one
with a conditional upsert, no study-wide lock); a study whose items are all taken takes
newcomers again once abandoned tasks are released (`rules.release_expired_assignments`). The
tasks themselves: `assign` (handing them out) and `pick` (saving a pick); seats given back, the
sweep and close-out: `participants`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from studies.judgment import assign, rules, seats, sql
from studies.models import Assignment, Invite, Participant, Study
from studies.models.participants import new_pseudonym

COMPREHENSION_ATTEMPTS = 2


class StudyUnavailable(Exception):
    """The study takes no new participants: not live, full, or nothing left to annotate."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "closed", "paused" or "full"



# --- Joining ------------------------------------------------------------------------------


S = sql.columns(Study, "s")


def find_study(slug: str) -> Study | None:
    """The study a link names, by its slug (one prepared statement: every newcomer's first two pages ask)."""
    row = sql.fetch_one(f"SELECT {S.sql} FROM {S.table} WHERE s.slug = %s", [slug])
    return None if row is None else S.load(row)


def pid_taken(study: Study, pid: str) -> bool:
    """Whether this Prolific PID already has a participant in the study."""
    query = f"SELECT 1 FROM {assign.P.table} WHERE p.study_id = %s AND p.external_id = %s LIMIT 1"
    return sql.fetch_one(query, [study.pk, pid]) is not None


def is_valid_invite(study: Study, token: str) -> bool:
    return bool(token) and hmac.compare_digest(token.encode(), study.invite_token.encode())


# Prolific's participant ids: 24 hexadecimal characters (a MongoDB ObjectId), compared in lower case.
PROLIFIC_PID = re.compile(r"[0-9a-f]{24}")


class LinkRefused(Exception):
    """The link lacks what the study's recruitment mode asks for (docs/security.md): the study's
    key, a valid single-use invite, or a well-formed PROLIFIC_PID. `missing_key`: say only that
    the key is missing or wrong (nothing about the study)."""

    def __init__(self, message: str = "", *, status: int = 403, missing_key: bool = False) -> None:
        super().__init__(message or "missing key")
        self.message, self.status, self.missing_key = message, status, missing_key


def normalized_pid(study: Study, pid: str) -> str:
    """A Prolific study's PIDs in lower case, so that one id can't join twice by changing case."""
    return pid.lower() if study.recruitment == Study.Recruitment.PROLIFIC else pid


def check_link(study: Study, *, invite: str, pid: str, lock: bool = False) -> Invite | None:
    """What a newcomer's link must carry, by the study's recruitment mode; the unused invite it
    names (invites mode), else None. Raises LinkRefused. The key is checked first, so a link
    without it learns nothing else. `lock`: take the invite's row lock (the join that uses it),
    which also reads its state as committed by a join that held the lock before."""
    found = None
    if study.recruitment == Study.Recruitment.INVITES:
        invites = Invite.objects.filter(study=study, token=invite)
        found = (invites.select_for_update(no_key=True) if lock else invites).first() if invite else None
        if found is None:
            raise LinkRefused(missing_key=True)
        if found.revoked_at is not None:
            raise LinkRefused("This invite link was withdrawn by the researchers.")
        if found.used_at is not None:
            raise LinkRefused("This invite link has been used already: each invite takes one place. Continue in the "
                              "browser where you started, or with your resume link.")  # fmt: skip
    elif not is_valid_invite(study, invite):
        raise LinkRefused(missing_key=True)
    if study.recruitment == Study.Recruitment.PROLIFIC and not PROLIFIC_PID.fullmatch(pid):
        raise LinkRefused("This study takes part through Prolific: please open it from Prolific, whose link carries "
                          "your Prolific ID (PROLIFIC_PID, 24 hexadecimal characters).", status=400)  # fmt: skip
    return found


def seats_taken(study: Study, *, up_to: int | None = None) -> int:
    """Participants who consented hold a seat against `Study.max_participants`, until they time
    out or return (`Participant.SEAT_FREED`); finishing keeps it (their work fills the place).

    `up_to`: count no further (a count of at most that many rows).
    """
    seated = study.participants.seated().order_by()
    return (seated[:up_to] if up_to is not None else seated).count()


def closed_reason(study: Study) -> str:
    """Why a study that takes nobody now says so: "paused" (it reopens) or "closed"."""
    return "paused" if study.status == Study.Status.PAUSED else "closed"


def ensure_open_for_newcomers(study: Study, *, count_seats: bool = True) -> None:
    """Raise StudyUnavailable unless a new participant could start annotating now.

    The seats are read from the study's counter (`seats.taken`: one row by primary key, whatever
    the number of participants); `count_seats=False` leaves them to the caller (consent claims
    one instead: `seats.claim`).
    """
    if not study.is_accepting_participants:
        raise StudyUnavailable(closed_reason(study))
    cap = study.max_participants
    if count_seats and cap is not None and seats.taken(study) >= cap:
        raise StudyUnavailable("full")
    if not rules.count_open(study, 1):
        raise StudyUnavailable("full")


def _ensure_open_releasing(study: Study, *, count_seats: bool = True) -> None:
    """`ensure_open_for_newcomers`, trying again once abandoned tasks have freed their places."""
    try:
        ensure_open_for_newcomers(study, count_seats=count_seats)
    except StudyUnavailable as exc:
        if exc.reason != "full" or not rules.release_expired_assignments(study=study):
            raise
        ensure_open_for_newcomers(study, count_seats=count_seats)


def create_invites(*, study: Study, count: int, label: str = "") -> list[Invite]:
    """`count` new single-use invite links for `study` (numbered after `label`, if given)."""
    return Invite.objects.bulk_create(
        [Invite(study=study, label=f"{label} {i}".strip() if label else "") for i in range(1, count + 1)]
    )


def revoke_invites(*, invites: QuerySet[Invite], now: datetime | None = None) -> int:
    """Withdraw the unused ones among `invites`: their links join nobody after this. A used
    invite stays as it is (its participant carries on; end them with "Mark returned")."""
    return invites.filter(used_at__isnull=True, revoked_at__isnull=True).update(revoked_at=now or timezone.now())


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
    The count and the insert that follows it are one step: a join first takes a transaction
    lock on (study, client) (PostgreSQL's advisory lock, held to the end of `join_study`'s
    transaction), so concurrent joins from one client are counted one after another and can't
    pass the limit together (#24), while joins from other clients and everything else in the
    study go on (#26: no study-wide lock on the way in). SQLite serialises the transactions.
    """
    limit, window = settings.UALIGN_JOIN_LIMIT, timedelta(seconds=settings.UALIGN_JOIN_WINDOW_SECONDS)
    if not limit or not client_key:
        return
    if connection.vendor == "postgresql":
        client = int.from_bytes(hashlib.blake2b(client_key.encode(), digest_size=4).digest(), "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [study.pk, client])
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
    invite: str | None = None,
) -> Participant:
    """Create a participant for a newcomer; the caller binds it to their browser.

    `invite`: the link's key (the study's key, or a single-use invite's token); None for the
    server's own joins (simulated annotators, tests), which skip the link's checks. With a key,
    the study's recruitment mode is checked (`check_link`: LinkRefused) and an invite is used up
    here, under its row lock, so two browsers racing on one invite get one place.

    Raises AlreadyJoined for a Prolific PID the study already has (including two joins of one
    PID racing), StudyUnavailable when the study is closed or full, and TooManyJoins past the
    per-client rate limit (`check_join_rate`).
    """
    if study.is_pilot and not is_simulated:  # a pilot copy (studies/pilots.py) is never open to people
        raise StudyUnavailable("closed")
    prolific_pid = normalized_pid(study, prolific_pid)
    used = None if invite is None else check_link(study, invite=invite, pid=prolific_pid, lock=True)
    if prolific_pid and pid_taken(study, prolific_pid):
        raise AlreadyJoined()
    check_join_rate(study=study, client_key=client_key)
    _ensure_open_releasing(study)  # abandoned tasks free places for newcomers
    fields = {"study": study, "external_id": prolific_pid, "client_key": client_key, "is_simulated": is_simulated}
    if prolific_pid:
        fields |= {"prolific_study_id": prolific_study_id, "prolific_session_id": prolific_session_id}
    try:
        with transaction.atomic():  # a savepoint: the unique PID's violation leaves the transaction usable
            participant = sql.insert(Participant(**fields, pseudonym=new_pseudonym()))  # as save() names one
    except IntegrityError:
        raise AlreadyJoined() from None  # the same PID joined at the same moment elsewhere
    if used is not None:
        Invite.objects.filter(pk=used.pk).update(used_by=participant, used_at=timezone.now())
    return participant


# --- Before the tasks ---------------------------------------------------------------------


@transaction.atomic
def record_consent(*, participant: Participant, accepted: bool, now: datetime | None = None) -> Participant:
    """Store the consent time (or the refusal); a consent takes a seat (`seats.claim`).

    Only the participant's own row is locked for the transaction; the seat is claimed by its
    last statement, so concurrent consents in one study wait on the seat row only for a commit,
    and exactly `max_participants` of them get a seat. Raises StudyUnavailable when the study is
    closed, paused or full (nothing saved).
    """
    participant, _ = assign.locked_participant(participant)  # with the study, in the hot path's SQL
    if participant.status != Participant.Status.JOINED:
        return participant  # answered already (a resubmitted form)
    if not accepted:
        participant.status = Participant.Status.DECLINED
        sql.update(participant, ["status"])
        return participant
    study = participant.study
    _ensure_open_releasing(study, count_seats=False)
    participant.consent_at = participant.last_active_at = now or timezone.now()
    participant.status = Participant.Status.CONSENTED
    sql.update(participant, ["consent_at", "last_active_at", "status"])
    if not seats.claim(study):  # last: the seat row stays locked only until the commit
        raise StudyUnavailable("full")  # rolls the consent back
    return participant


@transaction.atomic
def start_tasks(*, participant: Participant, comprehension_answer: str | None = None) -> Participant:
    """Leave the instructions: check the comprehension answer if the study asks one.

    A wrong answer uses one of two attempts; after the second the participant is screened out.
    """
    return _start_tasks(participant, comprehension_answer, timezone.now())[0]


@transaction.atomic
def start_tasks_with_first_task(
    *, participant: Participant, comprehension_answer: str | None = None
) -> tuple[Participant, Assignment | None]:
    """`start_tasks`, and the participant's first task when this call starts them (the
    instructions' POST, whose answer shows it): one transaction, one commit and one lock of the
    participant's row for both (#26: the instructions step was onboarding's slowest, with two).

    The task is None when the participant did not start here (a wrong answer, or a form sent
    again by someone already past it: their open task, if any, is the task page's to show), or
    when the study takes nobody now or has nothing left for them; `assign.assign_next_item` then
    tells which, as for any task page.
    """
    now = timezone.now()
    participant, done, started = _start_tasks(participant, comprehension_answer, now)
    if not started or not assign.may_take_new_task(participant, done):
        return participant, None
    # Nobody holds an open task before they start: no open assignment to look for.
    return participant, assign.claim_next(participant, done, now=now, shown_now=True)


def _start_tasks(participant: Participant, comprehension_answer: str | None,
                 now: datetime) -> tuple[Participant, assign.Done, bool]:
    """The locked participant after their comprehension answer, what they did, and whether they
    became active here."""
    participant, done = assign.locked_participant(participant)  # with the study, in the hot path's SQL
    if participant.status != Participant.Status.CONSENTED:
        return participant, done, False
    study = participant.study
    if study.comprehension_question and not participant.comprehension_passed:
        participant.comprehension_attempts += 1
        if comprehension_answer == study.comprehension_answer:
            participant.comprehension_passed = True
        elif participant.comprehension_attempts >= COMPREHENSION_ATTEMPTS:
            participant.status = Participant.Status.SCREENED_OUT
        sql.update(participant, ["comprehension_attempts", "comprehension_passed", "status"])
        if not participant.comprehension_passed:
            return participant, done, False
    participant.status = Participant.Status.ACTIVE
    participant.last_active_at = now
    sql.update(participant, ["status", "last_active_at"])
    return participant, done, True
