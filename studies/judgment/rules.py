"""The rules of the participant's path, spelled once: quota, live assignment, open item, the
items' counters, "has worked", and the timeout.

The annotator's hot path (`assign`, `pick`) and the rare paths (the sweep, releases, a late pick's
reclaim, close-out, the simulated annotators' sizing) all read these from here:

- **live assignment**: assigned or completed (`LIVE`); a released one holds no place;
- **quota**: an item takes at most `Study.annotations_per_item` live assignments (`has_room`);
- **open item**: one that needs judging (`ComparisonItem.needs_judgment`: items decided by
  construction are never assigned) and has room, of one kind (attention check or not), read
  highest priority first (`ComparisonItem.priority`, written by the adaptive allocation; 0
  otherwise), then fewest live assignments, then in a per-item shuffled order (`OPEN_ORDER`): a
  range of the `item_open_slots` index (`open_sql`, the one statement that reads it);
- **the counters**: an item carries its live assignments and the rotations they show
  (`ComparisonItem.live_assignments`, `rotation_use`), changed only by `take_place` and
  `give_back_places`, under the item's row lock, in the transaction that assigns, releases or
  reclaims (issue #14); `release_expired_assignments` and `release_open_assignments` are the only
  functions that release;
- **has worked**: a participant with at least one completed task (`Participant.tasks_done`, moved
  on by the pick that completes each, under the participant's row lock);
- **timeout**: an assignment open, or a participant idle, for longer than the study's
  `assignment_timeout` (`timeout_cutoff`);
- **takes picks**: a live study takes every pick; a paused one only the pick of a task still
  open (`ASSIGNED`: the participant finishes it); any other study none (`takes_pick`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from functools import cache

from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from studies.judgment import sql
from studies.models import Assignment, ComparisonItem, Participant, Study

# Assignments that hold a place on their item.
LIVE = (Assignment.Status.ASSIGNED, Assignment.Status.COMPLETED)


def has_room(live: int, study: Study) -> bool:
    """Whether an item with `live` live assignments takes one more (the study's quota)."""
    return live < study.annotations_per_item


def live_count(item_id: int) -> int:
    """An item's live assignments, counted on its rows (a late pick's reclaim checks the quota on
    the rows themselves rather than on the counter)."""
    return Assignment.objects.filter(item_id=item_id, status__in=LIVE).count()


def timeout_cutoff(study: Study, now: datetime | None = None) -> datetime:
    """An assignment open since before this has expired; a participant idle since before it has
    timed out."""
    return (now or timezone.now()) - study.assignment_timeout


def has_worked(participant: Participant) -> bool:
    """Whether the participant completed at least one task (they get the completion code when
    the study ends before their share)."""
    return participant.tasks_done > 0


def takes_pick(study_status: str, assignment_status: str) -> bool:
    """Whether a pick on an assignment in `assignment_status` may be saved into a study in
    `study_status` (docs/architecture.md, Lifecycle): live, or paused with the task still open.
    A closed study takes nothing, so no judgment lands after Close and no code is earned by it."""
    if study_status == Study.Status.LIVE:
        return True
    return study_status == Study.Status.PAUSED and assignment_status == Assignment.Status.ASSIGNED


def study_status_now(study: Study) -> str:
    """The study's status as committed now (a fresh read: a pick that waited on a row lock held
    by Close sees the close, not the status its locked read began with)."""
    return Study.objects.filter(pk=study.pk).values_list("status", flat=True).first() or ""


def completed_count(participant: Participant) -> int:
    """The participant's completed tasks, as their row counts them now."""
    return Participant.objects.filter(pk=participant.pk).values_list("tasks_done", flat=True).first() or 0


# --- Open items --------------------------------------------------------------------------------


# Open items of one kind that one participant was never assigned (released ones included): the
# `item_open_slots` index's range, less the participant's own assignments. Parameters: study id,
# attention (bool), quota, participant id.
OPEN_SQL = (
    "{items} WHERE i.study_id = %s AND i.needs_judgment AND i.is_attention_check = %s AND i.live_assignments < %s"
    " AND NOT EXISTS (SELECT 1 FROM {assignments} WHERE x.participant_id = %s AND x.item_id = i.id)"
)


# The order open items are handed out in: the `item_open_slots` index's, so that PostgreSQL walks
# the index and stops at the first row (or the limit).
OPEN_ORDER = "i.priority DESC, i.live_assignments, i.spread"


@cache
def open_sql(select: str, items: str) -> str:
    return f"SELECT {select} FROM " + OPEN_SQL.format(items=items, assignments=sql.columns(Assignment, "x").table)


@cache
def _count_sql() -> str:
    # In the index's order, so that PostgreSQL walks it and stops at the limit.
    items = sql.columns(ComparisonItem, "i").table
    return f"SELECT count(*) FROM ({open_sql('1', items)} ORDER BY {OPEN_ORDER} LIMIT %s) t"


def count_open(study: Study, limit: int, participant: Participant | None = None,
               kinds: tuple[bool, ...] = (False, True)) -> int:
    """Open items (unseen by `participant`, if given), counted up to `limit`: regular items first,
    attention checks only when those fall short (near the end of a study); `kinds`: only these
    (is_attention_check). Each kind is read in index order and stops at the limit: however many
    items the study has, and whatever the planner estimates, no query reads them all. Without a
    participant (the landing page, join and consent ask whether anything is open: #26), the same
    prepared statement runs for participant id 0, which no row has, rather than the ORM's query."""
    counted = 0
    for attention in kinds:
        params = [study.pk, attention, study.annotations_per_item, participant.pk if participant else 0,
                  limit - counted]  # fmt: skip
        row = sql.fetch_one(_count_sql(), params)
        counted += row[0] if row else 0
        if counted >= limit:
            break
    return counted


def open_places(study: Study) -> int:
    """The places left under quota over the items that need judging, their live assignments
    counted on their rows (the simulated annotators' sizing: `annotators_to_fill`)."""
    items = ComparisonItem.objects.filter(study=study, needs_judgment=True).annotate(
        taken=Count("assignments", filter=Q(assignments__status__in=LIVE))
    )
    return sum(max(study.annotations_per_item - taken, 0) for taken in items.values_list("taken", flat=True))


# --- The items' counters -------------------------------------------------------------------------


@cache
def _counters_sql() -> str:
    return (
        f"UPDATE {sql.quote(ComparisonItem._meta.db_table)}"
        " SET live_assignments = %s, rotation_use = %s WHERE id = %s"
    )


def _count(item: ComparisonItem, change: int, firsts: Iterable[int | None]) -> None:
    """Move the locked item's counters by `change` places, each showing its `firsts` first (one
    UPDATE by primary key, from the values read under the lock)."""
    use = Counter(item.rotation_use or {})
    for first in firsts:
        if first is not None:
            use[str(first)] += 1 if change > 0 else -1
    item.rotation_use = {key: n for key, n in use.items() if n > 0}
    item.live_assignments = max(0, item.live_assignments + change)
    sql.execute(_counters_sql(), [item.live_assignments, sql.prep(ComparisonItem, "rotation_use", item.rotation_use),
                                  item.pk])  # fmt: skip


def take_place(item: ComparisonItem, first: int | None) -> None:
    """Count one more live assignment, showing `first` first, on the item (its row locked)."""
    _count(item, 1, [first])


def give_back_places(item: ComparisonItem, firsts: list[int | None]) -> None:
    """Take released assignments, each showing one of `firsts` first, off the item (row locked)."""
    _count(item, -len(firsts), firsts)


def reclaim_place(assignment: Assignment, study: Study) -> bool:
    """A released assignment takes its place back if its item still has room (a pick arrived after
    its timeout); False when the item was filled meanwhile. Rare, so the live assignments are
    counted on the locked item's rows rather than read from its counter."""
    item = ComparisonItem.objects.select_for_update(no_key=True).only("pk", "live_assignments", "rotation_use").get(
        pk=assignment.item_id
    )
    if not has_room(live_count(item.pk), study):
        return False
    take_place(item, assignment.display_order[0] if assignment.display_order else None)
    return True


# --- Releasing -----------------------------------------------------------------------------------


@transaction.atomic
def release_expired_assignments(*, study: Study, now: datetime | None = None) -> int:
    """Release assignments older than the study's timeout; their items become available again.

    The participant who abandoned one keeps the released row, so they never get it again. Rows
    locked by a pick being saved right now are skipped (that pick wins; see `pick.record_judgment`).
    """
    expired = Assignment.objects.filter(status=Assignment.Status.ASSIGNED, assigned_at__lt=timeout_cutoff(study, now),
                                        item__study=study)  # fmt: skip
    return _release(expired, skip_locked=True)


@transaction.atomic
def release_open_assignments(*, study: Study | None = None, participant_ids: list[int] | None = None) -> int:
    """Release every open assignment of a study (it closes) or of some participants (they timed
    out or returned: studies/judgment/participants.py), with the counters. Waits for a pick in
    flight on one of them; once it is saved, that assignment is completed and no longer released."""
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
    items = ComparisonItem.objects.select_for_update(no_key=True).filter(pk__in=firsts).order_by("pk")
    for item in items.only("pk", "live_assignments", "rotation_use"):
        give_back_places(item, firsts[item.pk])
    return len(rows)
