"""The results page at a million judgments: snapshots of `compute_results`, kept until new judgments.

`compute_results` reads every judgment of a study and bootstraps its intervals: a few hundred
milliseconds at a few thousand judgments, most of a minute at a million (docs/benchmarks.md).
The results page and its 5-second poll (and the plot) are served from the last snapshot
(`ResultsSnapshot`, one per study and origin) while it is current:

- a snapshot is current while no judgment of its study and origin has an id above its watermark
  (the highest Judgment id when its computation began: one indexed range read, however many
  judgments the study has) and the study row has not changed since (`Study.updated_at`: its
  settings, such as how "can't decide" is analysed, or its status);
- when it is not, a study with at most `UALIGN_RESULTS_INLINE_MAX_JUDGMENTS` judgments is
  recomputed inside the request, as before; a larger one keeps showing the last snapshot, says
  how many judgments arrived since, and a Celery job (`studies.tasks.refresh_results`, queued by
  `studies.services.results_for_page`, at most once per `UALIGN_RESULTS_REFRESH_SECONDS`)
  computes the next one.

A snapshot is kept per study and *scope*: the origin, and whether the judgments of participants
rejected in review or ended for failed attention checks are included (`results.scope_key`: "real",
or "real+incl"; the `origin` arguments below take either). A review decision saves no judgment, so
a snapshot is also stale once the study's set of such participants changes (`flagged_participants`,
kept in the snapshot's results).

This module wraps `compute_results`; it does not change how results are computed. A pick whose
transaction was still open when a computation began (its id below the watermark) is counted by
the next one, which any later judgment, or a change of the study, brings on.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from studies.estimate.results import (
    StudyResults,
    compute_results,
    flagged_participants,
    judgments_for,
    parse_scope,
)
from studies.models import Judgment, ResultsSnapshot, Study

# New judgments are counted up to this many for the page ("10000+ new").
COUNT_NEW_UP_TO = 10_000


@dataclass(frozen=True)
class CachedResults:
    """What the results page shows and how fresh it is."""

    results: StudyResults | None  # None while the first computation of a large study runs
    computed_at: datetime | None
    compute_seconds: float | None
    new_judgments: int = 0  # judgments saved since the snapshot began (counted up to COUNT_NEW_UP_TO)
    refreshing: bool = False  # a newer computation is queued or running

    @property
    def is_current(self) -> bool:
        return self.results is not None and not self.new_judgments and not self.refreshing


def _load(snapshot: ResultsSnapshot | None) -> StudyResults | None:
    if snapshot is None or snapshot.payload is None:
        return None
    return pickle.loads(bytes(snapshot.payload))  # written by compute_and_store, never from a request  # noqa: S301


def _judgments(study: Study, scope: str) -> QuerySet[Judgment]:
    origin, include_unreviewed = parse_scope(scope)
    return judgments_for(study, origin, include_unreviewed=include_unreviewed)


def _new_since(study: Study, origin: str, snapshot: ResultsSnapshot) -> QuerySet[Judgment]:
    """Judgments of the study and scope saved after the snapshot began (a range of Judgment's key)."""
    return _judgments(study, origin).filter(pk__gt=snapshot.judgment_watermark or 0)


def current_snapshot(study: Study, origin: str) -> tuple[ResultsSnapshot | None, bool]:
    """The study's snapshot for `origin` (a scope key; or None) and whether it is current (three
    indexed queries: the snapshot, newer judgments, the participants left out by default)."""
    snapshot = ResultsSnapshot.objects.filter(study=study, origin=origin).first()
    if snapshot is None or snapshot.payload is None or snapshot.study_updated_at != study.updated_at:
        return snapshot, False
    if _new_since(study, origin, snapshot).exists():
        return snapshot, False
    results = _load(snapshot)
    return snapshot, results is not None and getattr(results, "flagged", None) == flagged_participants(study)


def cached(snapshot: ResultsSnapshot | None, study: Study, origin: str, *, current: bool) -> CachedResults:
    """The snapshot as the page shows it; when not current, with the judgments that arrived since
    and a recomputation on its way (`studies.services.results_for_page` queued it)."""
    new = 0
    if snapshot is not None and snapshot.payload is not None and not current:
        new = _new_since(study, origin, snapshot).order_by()[:COUNT_NEW_UP_TO].count()
    return CachedResults(_load(snapshot), snapshot.computed_at if snapshot else None,
                         snapshot.compute_seconds if snapshot else None, new, refreshing=not current)  # fmt: skip


def small_enough_to_compute_now(study: Study, origin: str) -> bool:
    """Whether the study has at most UALIGN_RESULTS_INLINE_MAX_JUDGMENTS judgments (counted no further)."""
    limit = settings.UALIGN_RESULTS_INLINE_MAX_JUDGMENTS
    return _judgments(study, origin).order_by()[: limit + 1].count() <= limit


def claim_refresh(study: Study, origin: str, now: datetime | None = None) -> bool:
    """Mark a refresh as requested, unless one was in the last UALIGN_RESULTS_REFRESH_SECONDS:
    True when the caller should queue it (a conditional UPDATE, so concurrent polls queue one)."""
    now = now or timezone.now()
    ResultsSnapshot.objects.get_or_create(study=study, origin=origin)
    cutoff = now - timedelta(seconds=settings.UALIGN_RESULTS_REFRESH_SECONDS)
    claimed = ResultsSnapshot.objects.filter(
        Q(refresh_requested_at__isnull=True) | Q(refresh_requested_at__lt=cutoff), study=study, origin=origin
    ).update(refresh_requested_at=now)
    return claimed == 1


def compute_and_store(study: Study, origin: str) -> CachedResults:
    """Compute the results now and keep them as the snapshot (unless a newer one got there first)."""
    study = Study.objects.get(pk=study.pk)  # its current settings and updated_at
    watermark = Judgment.objects.aggregate(top=Max("pk"))["top"] or 0
    started = time.perf_counter()
    scope_origin, include_unreviewed = parse_scope(origin)
    results = compute_results(study, origin=scope_origin, include_unreviewed=include_unreviewed)
    seconds = time.perf_counter() - started
    computed_at = timezone.now()
    with transaction.atomic():
        snapshot, _ = ResultsSnapshot.objects.select_for_update().get_or_create(study=study, origin=origin)
        if snapshot.judgment_watermark is None or snapshot.judgment_watermark <= watermark:
            snapshot.payload = pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
            snapshot.judgment_watermark, snapshot.study_updated_at = watermark, study.updated_at
            snapshot.computed_at, snapshot.compute_seconds = computed_at, seconds
            snapshot.refresh_requested_at = None
            snapshot.save()
    return CachedResults(results, computed_at, seconds)
