"""The participant-flow services: joining, assignment quota and balance, release, judgments."""

from __future__ import annotations

import importlib
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from studies.judgment import assign, flow, picking, rules
from studies.judgment.flow import AlreadyJoined, StudyUnavailable, TooManyJoins
from studies.judgment.picking import AssignmentLost, InvalidChoice
from studies.models import Assignment, Judgment, Participant, Study
from tests.factories import (
    in_threads,
    make_attention_item,
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db


def live_study_without_items(**overrides) -> Study:
    """A live study with no items yet (tests add them with `add_items`, `add_attention_checks`)."""
    fields = {"status": Study.Status.LIVE, "annotations_per_item": 2, "items_per_participant": 3, "attention_check_rate": 0}
    fields.update(overrides)
    return make_study(**fields)


def add_items(study: Study, n: int, *, per_prompt: int = 1, texts: int = 2):
    policy = study.policies.first() or make_policy(study=study)
    items = []
    for i in range(n):
        if i % per_prompt == 0:
            prompt = make_prompt(study=study)
        items.append(
            make_item(
                study=study, prompt=prompt, policy=policy, replicate=i % per_prompt,
                texts=[f"text {i}.{j}" for j in range(texts)], counts=[(2, 0)] + [(0, 1)] * (texts - 1),
            )
        )
    return items


def add_attention_checks(study: Study, n: int) -> None:
    """n attention checks on one new prompt, each showing a fine text and a broken one (slot 1)."""
    prompt = make_prompt(study=study)
    for r in range(n):
        make_attention_item(study=study, prompt=prompt, texts=["fine", f"zzz broken {r}"], broken=1, replicate=r)


def active(study: Study, **overrides) -> Participant:
    return make_participant(study=study, status=Participant.Status.ACTIVE, consent_at=timezone.now(), **overrides)


def pick(participant: Participant, position: int = 1, **kwargs):
    assignment = assign.assign_next_item(participant=participant)
    assert assignment is not None
    return picking.record_judgment(participant=participant, assignment_id=assignment.pk, position=position, **kwargs)


# --- Joining and consent ------------------------------------------------------------------


def test_a_known_prolific_pid_cannot_join_again():
    study = live_study_without_items()
    add_items(study, 1)
    first = flow.join_study(study=study, prolific_pid="5f1a", prolific_session_id="s1")
    with pytest.raises(AlreadyJoined):
        flow.join_study(study=study, prolific_pid="5f1a", prolific_session_id="s2")
    first.refresh_from_db()
    assert first.prolific_session_id == "s1"
    assert Participant.objects.filter(study=study).count() == 1


def test_anonymous_joins_create_a_new_participant_each_time():
    study = live_study_without_items()
    add_items(study, 1)
    a = flow.join_study(study=study)
    b = flow.join_study(study=study)
    assert a.pk != b.pk
    assert a.access_token != b.access_token


def test_one_client_may_create_only_the_limit_of_participants_per_study_and_window(settings):
    settings.UALIGN_JOIN_LIMIT, settings.UALIGN_JOIN_WINDOW_SECONDS = 2, 600
    study, other = live_study_without_items(), live_study_without_items()
    add_items(study, 1)
    add_items(other, 1)
    for _ in range(2):
        flow.join_study(study=study, client_key="client-a")
    with pytest.raises(TooManyJoins) as refused:
        flow.join_study(study=study, client_key="client-a")
    assert 0 < refused.value.retry_after <= 600
    flow.join_study(study=study, client_key="client-b")  # another client
    flow.join_study(study=other, client_key="client-a")  # another study
    Participant.objects.filter(study=study).update(created_at=timezone.now() - timedelta(seconds=601))
    flow.join_study(study=study, client_key="client-a")  # the window has passed
    assert Participant.objects.filter(study=study, client_key="client-a").count() == 3


def test_a_study_that_is_not_live_refuses_newcomers():
    study = live_study_without_items()
    add_items(study, 1)
    flow.join_study(study=study, prolific_pid="known")
    study.move_to(Study.Status.CLOSED)
    with pytest.raises(StudyUnavailable) as exc:
        flow.join_study(study=study, prolific_pid="newcomer")
    assert exc.value.reason == "closed"


def test_a_study_is_full_when_max_participants_consented():
    study = live_study_without_items(max_participants=1)
    add_items(study, 3)
    first = flow.join_study(study=study)
    waiting = flow.join_study(study=study)  # joined, not yet consented
    flow.record_consent(participant=first, accepted=True)
    with pytest.raises(StudyUnavailable) as exc:
        flow.join_study(study=study)
    assert exc.value.reason == "full"
    with pytest.raises(StudyUnavailable):
        flow.record_consent(participant=waiting, accepted=True)


def test_a_study_is_full_for_newcomers_when_every_item_has_its_annotations():
    study = live_study_without_items(annotations_per_item=1)
    add_items(study, 1)
    pick(active(study))
    with pytest.raises(StudyUnavailable) as exc:
        flow.join_study(study=study)
    assert exc.value.reason == "full"


def test_consent_stores_its_time_and_declining_is_recorded():
    study = live_study_without_items()
    add_items(study, 1)
    yes, no = make_participant(study=study), make_participant(study=study)
    before = timezone.now()
    flow.record_consent(participant=yes, accepted=True)
    flow.record_consent(participant=no, accepted=False)
    yes.refresh_from_db()
    no.refresh_from_db()
    assert yes.status == Participant.Status.CONSENTED
    assert yes.consent_at >= before
    assert no.status == Participant.Status.DECLINED
    assert no.consent_at is None


def test_comprehension_check_allows_two_attempts_then_screens_out():
    study = live_study_without_items(comprehension_question="Which do you pick?", comprehension_choices=["best", "first"],
                       comprehension_answer="best")
    lucky = make_participant(study=study, status=Participant.Status.CONSENTED)
    unlucky = make_participant(study=study, status=Participant.Status.CONSENTED)

    assert flow.start_tasks(participant=lucky, comprehension_answer="first").status == "consented"
    assert flow.start_tasks(participant=lucky, comprehension_answer="best").status == "active"
    flow.start_tasks(participant=unlucky, comprehension_answer="first")
    unlucky = flow.start_tasks(participant=unlucky, comprehension_answer="first")
    assert unlucky.status == Participant.Status.SCREENED_OUT
    assert unlucky.comprehension_attempts == 2
    assert not unlucky.comprehension_passed


def test_starting_hands_out_the_first_task_once_and_only_to_whoever_starts_there():
    study = live_study_without_items(comprehension_question="Which do you pick?", comprehension_choices=["best", "first"],
                                     comprehension_answer="best", annotations_per_item=1)  # fmt: skip
    add_items(study, 2)
    person = make_participant(study=study, status=Participant.Status.CONSENTED)

    person, first = flow.start_tasks_with_first_task(participant=person, comprehension_answer="first")
    assert (person.status, first) == (Participant.Status.CONSENTED, None)  # a wrong answer: no task
    assert not Assignment.objects.filter(participant=person).exists()

    person, first = flow.start_tasks_with_first_task(participant=person, comprehension_answer="best")
    assert person.status == Participant.Status.ACTIVE
    saved = Assignment.objects.get(participant=person)
    assert first.pk == saved.pk
    assert saved.status == Assignment.Status.ASSIGNED
    assert saved.rendered_at is not None  # shown in the answer: the latency runs from now
    assert saved.item.live_assignments == 1
    assert assign.assign_next_item(participant=person).pk == saved.pk  # the task page shows the same one

    again, second = flow.start_tasks_with_first_task(participant=person, comprehension_answer="best")  # re-sent
    assert (again.status, second) == (Participant.Status.ACTIVE, None)
    assert Assignment.objects.filter(participant=person).count() == 1


def test_starting_when_nothing_is_left_starts_without_a_task():
    study = live_study_without_items(annotations_per_item=1)
    (item,) = add_items(study, 1)
    assign.assign_next_item(participant=active(study))  # the only place taken
    person = make_participant(study=study, status=Participant.Status.CONSENTED)

    person, first = flow.start_tasks_with_first_task(participant=person)
    assert (person.status, first) == (Participant.Status.ACTIVE, None)
    assert not Assignment.objects.filter(participant=person).exists()
    item.refresh_from_db()
    assert item.live_assignments == 1


# --- Assignment ---------------------------------------------------------------------------


def test_each_item_gets_exactly_the_studys_number_of_annotations():
    study = live_study_without_items(annotations_per_item=3, items_per_participant=2)
    items = add_items(study, 4)
    people = [active(study) for _ in range(7)]
    for person in people:
        while (assignment := assign.assign_next_item(participant=person)) is not None:
            picking.record_judgment(participant=person, assignment_id=assignment.pk, position=1)
    per_item = Counter(Judgment.objects.values_list("assignment__item_id", flat=True))
    assert per_item == {item.pk: 3 for item in items}
    # 12 annotations over 7 people with 2 each: the last one found nothing left.
    assert [rules.completed_count(p) for p in people] == [2, 2, 2, 2, 2, 2, 0]


def test_no_participant_sees_the_same_item_twice():
    study = live_study_without_items(annotations_per_item=5, items_per_participant=10)
    add_items(study, 3)
    person = active(study)
    seen = []
    while (assignment := assign.assign_next_item(participant=person)) is not None:
        seen.append(assignment.item_id)
        picking.record_judgment(participant=person, assignment_id=assignment.pk, position=1)
    assert len(seen) == 3
    assert len(set(seen)) == 3
    person.refresh_from_db()
    # The study ran out before their share of 10: they did all there was, so they get the code.
    assert person.status == Participant.Status.COMPLETED


def test_an_open_assignment_is_resumed_not_replaced():
    study = live_study_without_items()
    add_items(study, 3)
    person = active(study)
    first = assign.assign_next_item(participant=person)
    assert assign.assign_next_item(participant=person).pk == first.pk
    assert person.assignments.count() == 1


def test_slot_order_is_balanced_across_annotators():
    study = live_study_without_items(annotations_per_item=6, items_per_participant=1)
    (item,) = add_items(study, 1, texts=3)
    canonical = list(item.shown.order_by("slot").values_list("id", flat=True))
    orders = []
    for _ in range(6):
        assignment = assign.assign_next_item(participant=active(study))
        orders.append(assignment.display_order)
    # Every order is a rotation of the canonical one, and each text sits in each position twice.
    rotations = [canonical[r:] + canonical[:r] for r in range(3)]
    assert all(order in rotations for order in orders)
    for position in range(3):
        assert Counter(order[position] for order in orders) == dict.fromkeys(canonical, 2)


def test_the_judgment_records_the_displayed_position_and_its_credit():
    study = live_study_without_items(items_per_participant=1)
    policy = make_policy(study=study)
    prompt = make_prompt(study=study)
    make_item(study=study, prompt=prompt, policy=policy, texts=["a", "b", "c"], counts=[(2, 0), (1, 1), (0, 1)],
              k=3, m=2)
    first, second = active(study), active(study)
    a1 = assign.assign_next_item(participant=first)
    a2 = assign.assign_next_item(participant=second)
    assert a1.display_order != a2.display_order
    # Both pick the text "b" (credit 1/2), wherever it was shown to them.
    for person, assignment in ((first, a1), (second, a2)):
        shown = assign.shown_in_order(assignment)
        position = [s.candidate.text for s in shown].index("b") + 1
        judgment = picking.record_judgment(participant=person, assignment_id=assignment.pk, position=position).judgment
        assert judgment.chosen_slot == position
        assert judgment.chosen.candidate.text == "b"
        assert judgment.credit == pytest.approx(0.5)


def test_attention_checks_are_interleaved_at_the_studys_rate():
    study = live_study_without_items(items_per_participant=10, attention_check_rate=0.2, annotations_per_item=1)
    add_items(study, 12)
    add_attention_checks(study, 3)
    person = active(study)
    kinds = []
    while (assignment := assign.assign_next_item(participant=person)) is not None:
        kinds.append(assignment.item.is_attention_check)
        picking.record_judgment(participant=person, assignment_id=assignment.pk, position=1)
    assert len(kinds) == 10
    assert sum(kinds) == 2
    assert not kinds[0]  # never the very first task
    assert not any(kinds[i] and kinds[i + 1] for i in range(len(kinds) - 1))


def test_a_participants_done_counters_follow_each_completed_task_and_nothing_else():
    """`Participant.tasks_done` / `attention_checks_done` (#14) equal the count of their completed
    assignments, of every kind, after every pick; a replayed pick moves neither."""
    study = live_study_without_items(items_per_participant=10, attention_check_rate=0.2, annotations_per_item=1)
    add_items(study, 12)
    add_attention_checks(study, 3)
    person = active(study)
    while (assignment := assign.assign_next_item(participant=person)) is not None:
        picking.record_judgment(participant=person, assignment_id=assignment.pk, position=1)
        picking.record_judgment(participant=person, assignment_id=assignment.pk, position=2)  # a replay
        person.refresh_from_db()
        completed = person.assignments.filter(status=Assignment.Status.COMPLETED)
        assert person.tasks_done == completed.count() == rules.completed_count(person)
        assert person.attention_checks_done == completed.filter(item__is_attention_check=True).count()
    assert (person.tasks_done, person.attention_checks_done) == (10, 2)


def test_the_migration_counts_what_existing_participants_did():
    from django.apps import apps

    migration = importlib.import_module("studies.migrations.0008_participant_done_counters")
    study = live_study_without_items(items_per_participant=3, attention_check_rate=0.5, annotations_per_item=2)
    add_items(study, 4)
    add_attention_checks(study, 2)
    people = [active(study) for _ in range(3)]
    for person, picks in zip(people, (3, 1, 0), strict=True):
        for _ in range(picks):
            pick(person)
    expected = list(Participant.objects.order_by("pk").values_list("tasks_done", "attention_checks_done"))
    assert expected[0][0] == 3
    assert expected[0][1] >= 1  # an attention check among them
    assert expected[2] == (0, 0)
    Participant.objects.update(tasks_done=0, attention_checks_done=0)  # as before the migration
    migration.count_done(apps, None)
    assert list(Participant.objects.order_by("pk").values_list("tasks_done", "attention_checks_done")) == expected


def test_an_abandoned_assignment_is_released_and_not_given_back_to_its_participant():
    study = live_study_without_items(annotations_per_item=1, assignment_timeout=timedelta(minutes=10))
    (item,) = add_items(study, 1)
    quitter, other = active(study), active(study)
    abandoned = assign.assign_next_item(participant=quitter)
    assert assign.assign_next_item(participant=other) is None  # the item is taken

    later = timezone.now() + timedelta(minutes=11)
    assert rules.release_expired_assignments(study=study, now=later) == 1
    abandoned.refresh_from_db()
    assert abandoned.status == Assignment.Status.RELEASED
    assert assign.assign_next_item(participant=quitter, now=later) is None
    assert assign.assign_next_item(participant=other, now=later).item_id == item.pk


def test_a_late_pick_on_a_released_assignment_counts_while_the_item_has_room():
    study = live_study_without_items(annotations_per_item=1, assignment_timeout=timedelta(minutes=10))
    add_items(study, 1)
    slow = active(study)
    assignment = assign.assign_next_item(participant=slow)
    rules.release_expired_assignments(study=study, now=timezone.now() + timedelta(minutes=11))
    result = picking.record_judgment(participant=slow, assignment_id=assignment.pk, position=2)
    assert result.created
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.COMPLETED


def test_a_late_pick_is_refused_once_someone_else_has_the_item():
    study = live_study_without_items(annotations_per_item=1, assignment_timeout=timedelta(minutes=10))
    add_items(study, 1)
    slow, fast = active(study), active(study)
    stale = assign.assign_next_item(participant=slow)
    later = timezone.now() + timedelta(minutes=11)
    rules.release_expired_assignments(study=study, now=later)
    taken = assign.assign_next_item(participant=fast, now=later)
    picking.record_judgment(participant=fast, assignment_id=taken.pk, position=1)
    with pytest.raises(AssignmentLost):
        picking.record_judgment(participant=slow, assignment_id=stale.pk, position=1)
    assert Judgment.objects.count() == 1


# --- Judgments ----------------------------------------------------------------------------


def test_recording_the_same_pick_twice_keeps_the_first_judgment():
    study = live_study_without_items()
    add_items(study, 3)
    person = active(study)
    assignment = assign.assign_next_item(participant=person)
    first = picking.record_judgment(participant=person, assignment_id=assignment.pk, position=1, rationale="short")
    replay = picking.record_judgment(participant=person, assignment_id=assignment.pk, position=2, rationale="other")
    assert first.created
    assert not replay.created
    assert replay.judgment.pk == first.judgment.pk
    assert Judgment.objects.get().chosen_slot == 1
    assert Judgment.objects.get().rationale == "short"


def test_someone_elses_assignment_cannot_be_answered():
    study = live_study_without_items()
    add_items(study, 2)
    owner, intruder = active(study), active(study)
    assignment = assign.assign_next_item(participant=owner)
    with pytest.raises(Assignment.DoesNotExist):
        picking.record_judgment(participant=intruder, assignment_id=assignment.pk, position=1)
    assert not Judgment.objects.exists()


def test_a_position_outside_the_shown_responses_is_refused():
    study = live_study_without_items()
    add_items(study, 1, texts=3)
    person = active(study)
    assignment = assign.assign_next_item(participant=person)
    for bad in (0, 4, None):
        with pytest.raises(InvalidChoice):
            picking.record_judgment(participant=person, assignment_id=assignment.pk, position=bad)
    assert not Judgment.objects.exists()


def test_latency_runs_from_first_render_to_pick_on_the_server():
    study = live_study_without_items()
    add_items(study, 1)
    person = active(study)
    assignment = assign.assign_next_item(participant=person)
    rendered = timezone.now()
    assign.mark_rendered(assignment, now=rendered)
    assign.mark_rendered(assignment, now=rendered + timedelta(seconds=30))  # a reload keeps the first
    judgment = picking.record_judgment(
        participant=person, assignment_id=assignment.pk, position=1, now=rendered + timedelta(seconds=4.25)
    ).judgment
    assert judgment.latency_ms == 4250
    assert judgment.rendered_at == rendered


@pytest.mark.parametrize(("analysis", "expected"), [("exclude", None), ("tie", 2 / 3)])
def test_cant_decide_is_credited_as_the_study_configures(analysis, expected):
    study = live_study_without_items(allow_cant_decide=True, cant_decide_analysis=analysis)
    policy = make_policy(study=study)
    make_item(study=study, prompt=make_prompt(study=study), policy=policy, texts=["a", "b"], counts=[(2, 0), (0, 1)],
              k=2, m=1)
    person = active(study)
    assignment = assign.assign_next_item(participant=person)
    judgment = picking.record_judgment(
        participant=person, assignment_id=assignment.pk, position=None, cant_decide=True
    ).judgment
    assert judgment.cant_decide
    assert judgment.chosen is None
    assert judgment.credit == (pytest.approx(expected) if expected is not None else None)


def test_cant_decide_is_refused_when_the_study_does_not_allow_it():
    study = live_study_without_items(allow_cant_decide=False)
    add_items(study, 1)
    person = active(study)
    assignment = assign.assign_next_item(participant=person)
    with pytest.raises(InvalidChoice):
        picking.record_judgment(participant=person, assignment_id=assignment.pk, position=None, cant_decide=True)


def test_failed_attention_checks_are_counted_and_end_the_session_at_the_limit():
    study = live_study_without_items(max_attention_failures=2, items_per_participant=5, annotations_per_item=1)
    prompt = make_prompt(study=study)
    for r in range(3):
        make_attention_item(study=study, prompt=prompt, texts=[f"fine {r}", f"qwfp broken {r}"], broken=1, replicate=r)
    person = active(study)
    outcomes = []
    for _ in range(2):
        assignment = assign.assign_next_item(participant=person)
        shown = [s.candidate for s in assign.shown_in_order(assignment)]
        broken = next(i for i, c in enumerate(shown, start=1) if c.is_attention_check)
        judgment = picking.record_judgment(participant=person, assignment_id=assignment.pk, position=broken).judgment
        outcomes.append(judgment.attention_passed)
        assert judgment.credit is None
    person.refresh_from_db()
    assert outcomes == [False, False]
    assert person.attention_failures == 2
    assert person.status == Participant.Status.ENDED
    assert assign.assign_next_item(participant=person) is None


def test_passing_an_attention_check_is_recorded():
    study = live_study_without_items(max_attention_failures=1, attention_check_rate=1)
    make_attention_item(study=study, prompt=make_prompt(study=study), texts=["fine", "broken"], broken=1)
    add_items(study, 2)
    person = active(study)
    assignment = assign.assign_next_item(participant=person)
    shown = [s.candidate for s in assign.shown_in_order(assignment)]
    fine = next(i for i, c in enumerate(shown, start=1) if not c.is_attention_check)
    assert assignment.item.is_attention_check
    judgment = picking.record_judgment(participant=person, assignment_id=assignment.pk, position=fine).judgment
    person.refresh_from_db()
    assert judgment.attention_passed is True
    assert person.attention_failures == 0
    assert person.status == Participant.Status.ACTIVE


def test_finishing_the_share_gives_the_completion_code():
    study = live_study_without_items(items_per_participant=2, completion_code="C0DE42")
    add_items(study, 3)
    person = active(study)
    pick(person)
    person.refresh_from_db()
    assert person.status == Participant.Status.ACTIVE
    pick(person)
    person.refresh_from_db()
    assert person.status == Participant.Status.COMPLETED
    assert person.completion_code == "C0DE42"
    assert person.completed_at is not None


# --- Concurrency (PostgreSQL row locks) ---------------------------------------------------



@pytest.mark.django_db(transaction=True)
def test_concurrent_participants_never_push_an_item_past_its_quota():
    study = live_study_without_items(annotations_per_item=2, items_per_participant=1)
    add_items(study, 3)
    people = [active(study) for _ in range(8)]

    def join(i: int):
        assignment = assign.assign_next_item(participant=people[i])
        return assignment.item_id if assignment else None

    results = in_threads(8, join)
    assert not [r for r in results if isinstance(r, BaseException)], results
    per_item = Counter(r for r in results if r is not None)
    assert sum(per_item.values()) == 6  # 3 items × 2 annotations; two people got nothing
    assert set(per_item.values()) == {2}


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_of_one_pick_save_it_once():
    study = live_study_without_items()
    add_items(study, 3)
    person = active(study)
    assignment = assign.assign_next_item(participant=person)

    def submit(i: int):
        return picking.record_judgment(participant=person, assignment_id=assignment.pk, position=1 + i % 2)

    results = in_threads(4, submit)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r.created for r in results) == 1
    assert len({r.judgment.pk for r in results}) == 1
    assert Judgment.objects.filter(assignment=assignment).count() == 1
