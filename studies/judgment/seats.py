"""Seats against `Study.max_participants`, counted on one row per study (`StudySeats`).

A participant holds a seat from consent until they time out or return
(`Participant.objects.seated()`). Counting those rows at each consent under the study's row lock
made every consent in a study wait for the one before it (issue #26). Instead:

- `claim`: consent takes a seat with one conditional upsert, `taken + 1 WHERE taken < cap`,
  returning nothing when the study is full. Two consents racing for the last seat serialise on
  this row only, and only from that statement to their commit: the caller runs it last;
- `give_back`: the moves that free seats (time-outs and returns, in `participants`) take them
  off in the same transaction, by the number of seated participants they freed;
- `taken`: the counter, for the landing page's "full" check (one read by primary key);
- `recount`: the seats counted on the participants' rows (the study page's figure, and a
  repair: migration 0015 wrote it for every existing study).

Locks are taken participant rows first, then the seat row (consent and the sweep alike), so
they cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from django.db.models import Count

from studies.judgment import sql
from studies.models import Participant, Study, StudySeats


@cache
def _table() -> str:
    return sql.quote(StudySeats._meta.db_table)


@cache
def _claim_sql() -> str:
    table = _table()
    # Written for both backends (the demo runs on SQLite): the target table by its name in the
    # DO UPDATE clause, and RETURNING unqualified (SQLite refuses a qualified name there).
    return (
        f"INSERT INTO {table} (study_id, taken) VALUES (%s, 1)"
        f" ON CONFLICT (study_id) DO UPDATE SET taken = {table}.taken + 1"
        f" WHERE {table}.taken < %s RETURNING taken"
    )


def claim(study: Study) -> bool:
    """Take one seat for a consenting participant; False when the study's seats are all taken.

    Unlimited studies count too (a cap set later then starts from the truth). Run it as the last
    statement of the consent's transaction: it holds the study's seat row until the commit.
    """
    cap = study.max_participants
    if cap is not None and cap < 1:
        return False
    # No cap: a bound no counter reaches, so that the statement (and its prepared plan) is one.
    row = sql.fetch_one(_claim_sql(), [study.pk, cap if cap is not None else 2**31 - 1])
    return row is not None


@cache
def _give_back_sql() -> str:
    # CASE, not GREATEST: SQLite has no GREATEST.
    return f"UPDATE {_table()} SET taken = CASE WHEN taken > %s THEN taken - %s ELSE 0 END WHERE study_id = %s"


def give_back(participant_ids: Iterable[int]) -> dict[int, int]:
    """Take the seats of these participants off their studies' counters, before their status
    changes to one of `Participant.SEAT_FREED` (their rows locked by the caller, in its
    transaction): only those seated now hold one. Returns the seats freed per study."""
    seated = Participant.objects.filter(pk__in=list(participant_ids)).seated().order_by("study_id")
    freed = dict(seated.values("study_id").annotate(n=Count("pk")).values_list("study_id", "n"))
    for study_id in sorted(freed):
        sql.execute(_give_back_sql(), [freed[study_id], freed[study_id], study_id])
    return freed


@cache
def _taken_sql() -> str:
    return f"SELECT taken FROM {_table()} WHERE study_id = %s"


def taken(study: Study) -> int:
    """The study's seats taken now, from its counter (no row yet: none)."""
    row = sql.fetch_one(_taken_sql(), [study.pk])
    return row[0] if row else 0


def recount(study: Study) -> int:
    """Set the counter to the seats counted on the participants' rows, and return it."""
    count = Participant.objects.filter(study=study).seated().count()
    StudySeats.objects.update_or_create(study=study, defaults={"taken": count})
    return count
