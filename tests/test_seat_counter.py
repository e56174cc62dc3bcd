"""Seats counted on one row per study (issue #26): consent takes no study-wide lock, and the
quota stays exact when many consent at once; time-outs and returns give seats back in the same
transaction; migration 0015 counted the seats already held."""

from __future__ import annotations

import threading
from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps as django_apps
from django.db import connection, transaction
from django.utils import timezone

from studies.judgment import flow, participants, seats
from studies.judgment.flow import StudyUnavailable
from studies.models import Participant, Study, StudySeats
from tests.factories import in_threads, make_live_study, make_participant

pytestmark = pytest.mark.django_db

Status = Participant.Status



def joined(study: Study, n: int) -> list[Participant]:
    return [flow.join_study(study=study, prolific_pid=f"PID{study.pk}x{i}") for i in range(n)]


def consent(participant: Participant) -> Participant:
    return flow.record_consent(participant=participant, accepted=True)


@pytest.mark.django_db(transaction=True)
def test_concurrent_consents_fill_exactly_the_places_of_the_study():
    study = make_live_study(n_items=40, max_participants=5)
    people = joined(study, 16)

    results = in_threads(16, lambda i: consent(people[i]))

    failures = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, StudyUnavailable) and r.reason == "full" for r in failures), failures
    seated = [r for r in results if isinstance(r, Participant)]
    assert len(seated) == 5
    assert len(failures) == 11
    assert Participant.objects.filter(study=study).seated().count() == 5
    assert Participant.objects.filter(study=study, status=Status.JOINED).count() == 11  # nothing half-saved
    assert seats.taken(study) == flow.seats_taken(study) == 5


@pytest.mark.django_db(transaction=True)
def test_a_consent_in_flight_does_not_hold_up_another_study_s_or_its_own_study_s_page():
    """The consent transaction holds its participant's row and, after its last statement, the
    seat row: the study's row stays free (the pick and the researcher's page read and lock it)."""
    study = make_live_study(n_items=4, max_participants=3)
    first, second = joined(study, 2)
    done = threading.Event()

    with transaction.atomic():
        consent(first)  # this transaction now holds the seat row until it commits

        def other() -> None:
            try:
                with transaction.atomic():
                    Study.objects.select_for_update(no_key=True, nowait=True).get(pk=study.pk)
                done.set()
            finally:
                connection.close()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=30)
        assert done.is_set()  # the study's row was not locked by the consent
    consent(second)
    assert seats.taken(study) == 2


def test_time_outs_and_returns_give_seats_back_and_newcomers_take_them():
    study = make_live_study(n_items=10, max_participants=2)
    a, b, late = joined(study, 3)
    consent(a), consent(b)
    with pytest.raises(StudyUnavailable):
        consent(late)
    assert seats.taken(study) == 2

    Participant.objects.filter(pk=a.pk).update(last_active_at=timezone.now() - timedelta(hours=5))
    assert participants.time_out_inactive(study=study) == 1
    assert seats.taken(study) == 1
    participants.return_participants(participants=Participant.objects.filter(pk__in=[a.pk, b.pk]))
    assert seats.taken(study) == 0  # a had given their seat back already: counted once
    assert consent(late).status == Status.CONSENTED
    assert seats.taken(study) == flow.seats_taken(study) == 1


def test_returning_someone_who_never_consented_frees_no_seat():
    study = make_live_study(n_items=10, max_participants=3)
    seated = consent(joined(study, 1)[0])
    never = flow.join_study(study=study, prolific_pid="never")
    participants.return_participants(participants=Participant.objects.filter(pk=never.pk))
    assert seats.taken(study) == 1
    assert seated.status == Status.CONSENTED


def test_a_refused_consent_takes_no_seat_and_a_closed_study_takes_none():
    study = make_live_study(n_items=10, max_participants=3)
    first, second = joined(study, 2)
    assert flow.record_consent(participant=first, accepted=False).status == Status.DECLINED
    Study.objects.filter(pk=study.pk).update(status=Study.Status.PAUSED)
    with pytest.raises(StudyUnavailable):
        consent(second)
    assert seats.taken(study) == 0
    assert Participant.objects.get(pk=second.pk).status == Status.JOINED


def test_a_study_without_a_cap_counts_its_seats_too_so_that_a_cap_set_later_holds():
    study = make_live_study(n_items=10)
    for p in joined(study, 3):
        consent(p)
    assert seats.taken(study) == 3
    Study.objects.filter(pk=study.pk).update(max_participants=3)
    study.refresh_from_db()
    with pytest.raises(StudyUnavailable):
        flow.ensure_open_for_newcomers(study)


def test_recount_repairs_the_counter_from_the_rows():
    study = make_live_study(n_items=10, max_participants=4)
    consent(joined(study, 1)[0])
    StudySeats.objects.filter(study=study).update(taken=4)
    assert seats.recount(study) == 1
    assert seats.taken(study) == 1


def test_the_migration_counts_the_seats_already_held():
    study = make_live_study(n_items=4)
    now = timezone.now()
    for status in (Status.CONSENTED, Status.ACTIVE, Status.COMPLETED, Status.SCREENED_OUT, Status.TIMED_OUT,
                   Status.RETURNED):  # fmt: skip
        make_participant(study=study, status=status, consent_at=now)
    make_participant(study=study, status=Status.JOINED)
    empty = make_live_study(n_items=1)
    StudySeats.objects.all().delete()

    migration = import_module("studies.migrations.0015_seat_counter")
    migration.count_seats(django_apps, None)

    assert StudySeats.objects.get(study=study).taken == 4
    assert StudySeats.objects.get(study=empty).taken == 0
