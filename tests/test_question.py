"""The pre-registered question and its stopping rule (issue #22): stated before going live, checked against
the study, frozen once live; answered live from the judgments with the confidence sequence of
`workers.stats.sequential`; the periodic check pauses an answered study once; the pages show the saving."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from studies import demo, pilots, services, tasks
from studies.estimate import plans
from studies.estimate import question as live
from studies.models import ComparisonItem, Job, Judgment, Policy, Study, StudyQuestion
from studies.simulated_annotators import annotators_to_fill
from tests.annotator import start, url
from tests.csv_study import csv_study, prepare
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)
from tests.judgments import make_judgment
from workers.stats import sequential

pytestmark = pytest.mark.django_db

N_PROMPTS, PEOPLE = 12, 3


def judged_two_policies(rates: dict[str, float], *, seed: int = 0, status: str = Study.Status.LIVE,
                        n_prompts: int = N_PROMPTS) -> tuple[Study, dict[tuple[str, int], list[float]]]:
    """Policies named by `rates`, each against its adversary at k = 2 on `n_prompts` prompts, every item judged
    by PEOPLE annotators who pick the policy's own text (credit 1) with its rate, else the adversary's (0).
    Returns the study and each (policy, prompt index)'s credits, as the test computed them."""
    study = make_study(k_values=[2, 4], status=status, annotations_per_item=PEOPLE, items_per_participant=4,
                       attention_check_rate=0)
    rng = np.random.default_rng(seed)
    people = [make_participant(study=study) for _ in range(PEOPLE)]
    credits: dict[tuple[str, int], list[float]] = {}
    policies = {name: make_policy(study=study, name=name) for name in rates}
    for i in range(n_prompts):
        prompt = make_prompt(study=study)
        for name, rate in rates.items():
            item = make_item(study=study, prompt=prompt, policy=policies[name], texts=[f"{name} own {i}", f"adv {name} {i}"],
                             counts=[(2, 0), (0, 1)], k=2)
            for person in people:
                pick = 0 if rng.random() < rate else 1
                make_judgment(item=item, participant=person, pick=pick)
                credits.setdefault((name, i), []).append(1.0 if pick == 0 else 0.0)
    return study, credits


def ask(study: Study, **fields) -> StudyQuestion:
    """A question saved while the study is not yet live (as the researcher states it), then the status back."""
    status = study.status
    Study.objects.filter(pk=study.pk).update(status=Study.Status.READY)
    study.refresh_from_db()
    question = StudyQuestion(study=study, **fields)
    question.full_clean()
    question.save()
    Study.objects.filter(pk=study.pk).update(status=status)
    question.study.refresh_from_db()
    return question


def expected_sequence(units: list[float], *, alpha: float, planned: int, sd: float) -> sequential.Sequence:
    return sequential.confidence_sequence(np.array(units), alpha=alpha,
                                          rho=sequential.tuned_rho(planned, alpha=alpha, sd=sd), max_variance=sd * sd)


# --- validation -------------------------------------------------------------------------------------------


def test_each_kind_names_what_it_lacks_and_what_it_must_not_have():
    study = make_study(k_values=[1, 4])
    a, b = make_policy(study=study, name="a"), make_policy(study=study, name="b")
    cases = [
        ({"kind": "threshold", "policy": a, "k": 4}, {"threshold": "needs a threshold x"}),
        ({"kind": "threshold", "policy": a, "k": 3, "threshold": 0.8}, {"k": "k = 3 is not one of the study's k values (1, 4)"}),
        ({"kind": "threshold", "policy": a, "k": 4, "threshold": 1.2}, {"threshold": "strictly between 0 and 1"}),
        ({"kind": "difference", "policy": a, "other_policy": a, "k": 1}, {"other_policy": "must differ"}),
        ({"kind": "difference", "policy": a, "k": 1}, {"other_policy": "needs a second policy (B)"}),
        ({"kind": "precision", "half_width": 0.05, "policy": b}, {"policy": "has no a policy: leave it blank"}),
        ({"kind": "precision", "half_width": 0.7}, {"half_width": "at most 0.5"}),
        ({"kind": "threshold", "policy": a, "k": 4, "threshold": 0.8, "alpha": 0.5}, {"alpha": "at most 0.2"}),
    ]
    for fields, wanted in cases:
        with pytest.raises(ValidationError) as caught:
            StudyQuestion(study=study, **fields).full_clean()
        for field, text in wanted.items():
            assert any(text in message for message in caught.value.message_dict[field]), (fields, caught.value)
    StudyQuestion(study=study, kind="difference", policy=a, other_policy=b, k=4).full_clean()  # well posed


def test_a_policy_of_another_study_is_refused():
    study, other = make_study(k_values=[2]), make_study(k_values=[2])
    stranger = make_policy(study=other, name="stranger")
    with pytest.raises(ValidationError) as caught:
        StudyQuestion(study=study, kind="threshold", policy=stranger, k=2, threshold=0.7).full_clean()
    assert "is not a policy of" in caught.value.message_dict["policy"][0]


def question_post(study: Study, *, existing: StudyQuestion | None = None, **fields) -> dict:
    """The study's admin change form as posted, with the question inline set to `fields`."""
    data = {"title": study.title, "slug": study.slug, "consent_text": study.consent_text, "k_values": "2",
            "pool_size": "16", "opponent_outputs": "1", "replicates": "1", "annotations_per_item": "3",
            "items_per_participant": "4", "seed": "0", "held_out_fraction": "0.25", "attention_check_rate": "0",
            "cant_decide_analysis": "exclude", "assignment_timeout": "00:30:00", "recruitment": "shared_link",
            "completion_code": study.completion_code, "comprehension_choices": "[]", "adversary": "model",
            "screened_opponents": "4", "allocation_half_width": "0.05"}
    for prefix in ("policies", "preference_sources"):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    data.update({"question-TOTAL_FORMS": "1", "question-INITIAL_FORMS": "1" if existing else "0",
                 "question-MIN_NUM_FORMS": "0", "question-MAX_NUM_FORMS": "1", "question-0-study": str(study.pk),
                 "question-0-id": str(existing.pk) if existing else "", "question-0-margin": "0",
                 "question-0-alpha": "0.05", "question-0-on_answer": "pause"})
    data.update({f"question-0-{name}": str(value) for name, value in fields.items()})
    return data


def test_the_admin_shows_clear_errors_and_saves_nothing_for_a_bad_question(researcher_client):
    study = make_study(k_values=[2], status=Study.Status.READY, annotations_per_item=3, items_per_participant=4,
                       attention_check_rate=0)
    make_policy(study=study, name="a")
    stranger = make_policy(study=make_study(), name="stranger")
    url = reverse("admin:studies_study_change", args=[study.pk])
    response = researcher_client.post(url, question_post(study, kind="threshold", policy=stranger.pk, k=8,
                                                         threshold="0.8"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Select a valid choice" in html  # another study's policy is not on offer
    assert "k = 8 is not one of the study&#x27;s k values (2)" in html
    assert not StudyQuestion.objects.exists()

    a = study.policies.get()
    response = researcher_client.post(url, question_post(study, kind="threshold", policy=a.pk, k=2, threshold="0.8"))
    assert response.status_code == 302
    assert StudyQuestion.objects.get(study=study).text == "Is a's f̂(2) at least 0.8?"


# --- frozen once live -------------------------------------------------------------------------------------


def test_the_question_is_frozen_once_the_study_goes_live(researcher_client):
    study = make_study(k_values=[2], status=Study.Status.READY, annotations_per_item=3, items_per_participant=4,
                       attention_check_rate=0)
    a = make_policy(study=study, name="a")
    question = ask(study, kind="threshold", policy=a, k=2, threshold=0.8)
    question.threshold = 0.7
    question.save()  # before going live it may change
    Study.objects.filter(pk=study.pk).update(status=Study.Status.LIVE)

    fresh = StudyQuestion.objects.get(pk=question.pk)
    fresh.threshold = 0.6
    with pytest.raises(ValidationError, match="pre-registered question is frozen"):
        fresh.save()
    with pytest.raises(ValidationError, match="frozen"):
        StudyQuestion.objects.get(pk=question.pk).delete()

    url = reverse("admin:studies_study_change", args=[study.pk])
    response = researcher_client.post(url, question_post(study, existing=question, kind="threshold", policy=a.pk, k=2,
                                                         threshold="0.6"))
    assert response.status_code == 200
    assert "pre-registered question is frozen" in response.content.decode()
    assert StudyQuestion.objects.get(pk=question.pk).threshold == 0.7

    # the price is bookkeeping, not the question: it may be set on a live study
    response = researcher_client.post(url, question_post(study, existing=question, kind="threshold", policy=a.pk, k=2,
                                                         threshold="0.7", price_per_participant="3.00"))
    assert response.status_code == 302
    assert StudyQuestion.objects.get(pk=question.pk).price_per_participant == Decimal("3.00")
    page = researcher_client.get(url).content.decode()
    assert 'name="question-0-DELETE"' not in page  # nor deleted


# --- the live answer --------------------------------------------------------------------------------------


def test_a_threshold_answer_is_the_sequence_of_the_prompt_means_read_now():
    study, credits = judged_two_policies({"a": 0.9, "b": 0.5}, seed=1)
    codes = set()
    for name, threshold, margin in (("a", 0.5, 0.0), ("a", 0.85, 0.0), ("b", 0.9, 0.0), ("a", 0.9, 0.3)):
        question = StudyQuestion(study=study, kind="threshold", policy=study.policies.get(name=name), k=2,
                                 threshold=threshold, margin=margin, alpha=0.05)
        answer = live.evaluate(question)
        units = [float(np.mean(credits[(name, i)])) for i in range(N_PROMPTS)]
        seq = expected_sequence(units, alpha=0.05, planned=N_PROMPTS, sd=0.5)
        code = int(sequential.answer_threshold(seq, threshold, margin)[-1])
        codes.add(code)
        assert answer.answer == {sequential.UNANSWERED: "", sequential.ABOVE: "yes", sequential.BELOW: "no",
                                 sequential.EQUIVALENT: "equivalent"}[code]
        (reading,) = answer.readings
        assert reading.n_prompts == N_PROMPTS
        assert (reading.estimate, reading.low, reading.high) == pytest.approx(
            (seq.estimate[-1], seq.low[-1], seq.high[-1]), abs=1e-12)
    assert codes == {sequential.ABOVE, sequential.UNANSWERED, sequential.BELOW, sequential.EQUIVALENT}, codes
    assert live.evaluate(StudyQuestion(study=study, kind="threshold", policy=study.policies.get(name="a"), k=2,
                                       threshold=0.5)).answer == "yes"  # 0.9 against ½ on 36 picks: decided


def test_a_difference_answer_is_the_sequence_of_the_paired_prompt_differences():
    study, credits = judged_two_policies({"a": 0.95, "b": 0.2}, seed=2)
    question = StudyQuestion(study=study, kind="difference", policy=study.policies.get(name="a"),
                             other_policy=study.policies.get(name="b"), k=2, alpha=0.1)
    answer = live.evaluate(question)
    units = [float(np.mean(credits[("a", i)]) - np.mean(credits[("b", i)])) for i in range(N_PROMPTS)]
    seq = expected_sequence(units, alpha=0.1, planned=N_PROMPTS, sd=1.0)
    code = int(sequential.answer_difference(seq, 0.0)[-1])
    assert code == sequential.ABOVE
    assert answer.answer == "yes"
    assert (answer.readings[0].low, answer.readings[0].high) == pytest.approx((seq.low[-1], seq.high[-1]), abs=1e-12)

    swapped = StudyQuestion(study=study, kind="difference", policy=study.policies.get(name="b"),
                            other_policy=study.policies.get(name="a"), k=2, alpha=0.1)
    assert live.evaluate(swapped).answer == "no"


def test_a_precision_answer_asks_every_headline_and_waits_for_missing_cells():
    study, credits = judged_two_policies({"a": 0.7, "b": 0.6}, seed=3)
    question = StudyQuestion(study=study, kind="precision", half_width=0.3, alpha=0.05)
    waiting = live.evaluate(question)  # k = 4 has no judgment yet
    assert not waiting.answered
    assert "2 of 4 headline cells have no judgment yet" in waiting.sentence

    Study.objects.filter(pk=study.pk).update(k_values=[2])
    study.refresh_from_db()
    outcomes = set()
    for h in (0.3, 0.1):
        question = StudyQuestion(study=study, kind="precision", half_width=h, alpha=0.05)
        seqs = []
        for name in ("a", "b"):
            seq = expected_sequence([float(np.mean(credits[(name, i)])) for i in range(N_PROMPTS)], alpha=0.05,
                                    planned=N_PROMPTS, sd=0.5)
            seqs.append(sequential.Sequence(seq.estimate[-1:], seq.radius[-1:], seq.count[-1:], 0.05, seq.method))
        expected = bool(sequential.answer_precision(seqs, h)[-1])
        assert live.evaluate(question).answered is expected
        outcomes.add(expected)
    assert outcomes == {True, False}
    assert live.evaluate(StudyQuestion(study=study, kind="precision", half_width=0.01)).answered is False


def test_fewer_prompts_than_the_rule_needs_is_not_yet():
    study, _ = judged_two_policies({"a": 1.0}, n_prompts=sequential.MIN_UNITS - 1)
    answer = live.evaluate(StudyQuestion(study=study, kind="threshold", policy=study.policies.get(), k=2,
                                         threshold=0.1))
    assert not answer.answered
    assert f"the rule answers from {sequential.MIN_UNITS}" in answer.sentence


# --- the periodic check -----------------------------------------------------------------------------------


def test_the_periodic_check_pauses_an_answered_study_once_and_leaves_an_unanswered_one_alone():
    answered, _ = judged_two_policies({"a": 0.95}, seed=4)
    open_, _ = judged_two_policies({"a": 0.55}, seed=5)
    told, _ = judged_two_policies({"a": 0.95}, seed=6)
    ask(answered, kind="threshold", policy=answered.policies.get(), k=2, threshold=0.5, on_answer="pause")
    ask(open_, kind="threshold", policy=open_.policies.get(), k=2, threshold=0.5, on_answer="pause")
    ask(told, kind="threshold", policy=told.policies.get(), k=2, threshold=0.5, on_answer="tell")

    assert tasks.check_questions() == {"checked": 3, "answered": 2, "paused": 1, "failed": 0}

    answered.refresh_from_db()
    assert answered.status == Study.Status.PAUSED
    record = StudyQuestion.objects.get(study=answered)
    assert record.paused_study
    assert record.answer == "yes"
    assert record.answered_at is not None
    assert record.answered_judgments == Judgment.objects.filter(assignment__item__study=answered).count()
    assert record.answer_text.startswith("Yes: a's f̂(2) is above 0.5")

    open_.refresh_from_db()
    assert open_.status == Study.Status.LIVE
    assert StudyQuestion.objects.get(study=open_).answered_at is None

    told.refresh_from_db()
    told_record = StudyQuestion.objects.get(study=told)
    assert told.status == Study.Status.LIVE
    assert told_record.answer == "yes"
    assert not told_record.paused_study

    # the researcher resumes: the rule has spoken once and does not pause again
    services.change_study_status(study=answered, action="resume")
    assert tasks.check_questions() == {"checked": 1, "answered": 0, "paused": 0, "failed": 0}
    answered.refresh_from_db()
    assert answered.status == Study.Status.LIVE
    assert StudyQuestion.objects.get(study=answered).answered_at == record.answered_at


def test_a_paused_study_tells_its_annotators_so_and_its_page_says_why(client, researcher_client):
    study, _ = judged_two_policies({"a": 0.95}, seed=7)
    for prompt in study.prompts.all()[:4]:  # open items in another cell, for an annotator still at work
        make_item(study=study, prompt=prompt, policy=study.policies.get(), texts=[f"k4 {prompt.pk}", f"x {prompt.pk}"],
                  counts=[(4, 0), (0, 1)], k=4)
    ask(study, kind="threshold", policy=study.policies.get(), k=2, threshold=0.5)
    participant = start(client, study)  # with their first task open
    assert live.record_if_answered(study.question.pk).paused_study
    study.refresh_from_db()
    assert study.status == Study.Status.PAUSED
    current = participant.assignments.get(status="assigned")  # theirs to finish, as with any pause
    client.post(url("submit_judgment", study), {"assignment": current.pk, "choice": 1})
    assert 'id="paused-heading"' in client.get(url("task", study)).content.decode()  # the existing pause page

    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert "Paused by its pre-registered question" in page
    assert "after 36 judgments" in page  # 12 prompts × 3 annotators, when it was answered


# --- the pages and the saving -----------------------------------------------------------------------------


def test_the_results_page_shows_the_question_the_answer_and_the_saving_at_the_planners_price(researcher_client):
    study, _ = judged_two_policies({"a": 0.95}, seed=8)
    # 12 prompts' items are the plan; make it larger, as a study answered early would be, with a second k
    for prompt in study.prompts.all():
        make_item(study=study, prompt=prompt, policy=study.policies.get(), texts=[f"k4 {prompt.pk}", f"adv4 {prompt.pk}"],
                  counts=[(4, 0), (0, 1)], k=4)
    ask(study, kind="threshold", policy=study.policies.get(), k=2, threshold=0.5, price_per_participant=Decimal("2.40"))
    live.record_if_answered(study.question.pk)

    html = researcher_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    planned = plans.design_fit(study).judgments
    used = Judgment.objects.filter(assignment__item__study=study).count()
    per_judgment = Decimal("2.40") / study.items_per_participant
    money = (per_judgment * (planned - used)).quantize(Decimal("0.01"))
    assert planned == 2 * N_PROMPTS * PEOPLE
    assert used == N_PROMPTS * PEOPLE
    assert "Is a&#x27;s f̂(2) at least 0.5?" in html
    assert "Answered." in html
    assert "Yes: a&#x27;s f̂(2) is above 0.5" in html
    assert f"{used:,} judgments when it was answered, against the {planned:,}" in html
    assert f"{planned - used:,} judgments saved by stopping there (50% of the plan), {money:,.2f}" in html
    assert "The study was paused by its stopping rule." in html

    # without a price: the judgments, and a plain word that there is no price
    StudyQuestion.objects.filter(study=study).update(price_per_participant=None)
    html = researcher_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert "no price per participant is set on the question" in html
    assert f"{money:,.2f}" not in html


def test_an_unanswered_question_shows_on_both_pages_without_a_saving(researcher_client):
    study, _ = judged_two_policies({"a": 0.6}, seed=9)
    ask(study, kind="threshold", policy=study.policies.get(), k=2, threshold=0.6)
    html = researcher_client.get(reverse("studies:results", args=[study.slug])).content.decode()
    assert "Not answered yet." in html
    assert "Not yet: it still holds 0.6" in html
    assert 'id="question-saving"' not in html
    admin_html = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert 'id="question-live"' in admin_html
    assert "Not yet" in admin_html
    assert "Not answered yet" in admin_html


# --- the demo ---------------------------------------------------------------------------------------------


def test_the_demo_and_its_pilot_have_the_pre_registered_question(researcher_client):
    study = demo.ensure_demo_study()
    question = study.question
    assert (question.kind, question.policy.name, question.k, question.threshold) == ("threshold", "nlhf", 8, 8 / 9)
    question.full_clean()  # well posed for the demo's policies and k values

    nlhf = study.policies.get(name="nlhf")
    for prompt in study.prompts.all():
        make_item(study=study, prompt=prompt, policy=nlhf, texts=[f"n {prompt.pk}", f"a {prompt.pk}"],
                  counts=[(8, 0), (0, 1)], k=8)
    pilot = pilots.create_pilot(study)
    copy = pilot.question
    assert copy.policy.study_id == pilot.pk
    assert copy.policy.name == "nlhf"
    assert (copy.kind, copy.k, copy.threshold, copy.on_answer, copy.answered_at) == ("threshold", 8, 8 / 9, "tell", None)

    people = [make_participant(study=pilot, is_simulated=True) for _ in range(2)]
    for item in ComparisonItem.objects.filter(study=pilot):
        for person in people:
            make_judgment(item=item, participant=person, pick=1)  # the adversary's text, every time
    assert live.record_if_answered(copy.pk).answer == "no"  # only told: the pilot stays live
    html = researcher_client.get(reverse("studies:results", args=[pilot.slug]) + "?source=simulated").content.decode()
    assert copy.text.replace("'", "&#x27;") in html
    assert "Answered." in html
    assert "No: nlhf&#x27;s f̂(8) is below 0.888889" in html
    assert "judgments that stopping there would save" in html
    assert Policy.objects.filter(study=pilot).count() == study.policies.count()
    pilots.delete_pilot(pilot)  # the question goes with its pilot
    assert not StudyQuestion.objects.filter(study_id=pilot.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_simulated_pilot_stops_at_its_answer_while_the_run_holds_the_worker(live_server, settings, monkeypatch):
    """One worker runs the whole simulation, so the beat's check would come after it: the run checks its
    study's question as annotators finish, and a pausing question stops the pilot short of its plan."""
    settings.SITE_URL = live_server.url
    monkeypatch.setattr(live, "SIMULATION_CHECK_SECONDS", 0.0)
    study, prompts = csv_study(n_prompts=12, kinds=("multiplayer",), k_values=[2], annotations_per_item=2,
                               items_per_participant=4)
    prepare(study, prompts)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.READY)
    study.refresh_from_db()
    ask(study, kind="threshold", policy=study.policies.get(), k=2, threshold=0.05, on_answer="pause")
    Study.objects.filter(pk=study.pk).update(status=Study.Status.LIVE)
    pilot = pilots.create_pilot(study)
    job = Job.objects.create(study=pilot, kind=Job.Kind.SIMULATE, params={"annotators": annotators_to_fill(pilot)})

    tasks.simulate_annotators(job.pk)

    job.refresh_from_db()
    pilot.refresh_from_db()
    record = StudyQuestion.objects.get(study=pilot)
    assert job.status == Job.Status.DONE, job.error
    assert pilot.status == Study.Status.PAUSED
    assert record.paused_study
    assert record.answer == "yes"
    planned = plans.design_fit(pilot).judgments
    judged = Judgment.objects.filter(assignment__item__study=pilot).count()
    assert record.answered_judgments <= judged < planned  # stopped short of the plan (the open tasks finish)
    assert live.saving(record).saved_judgments == planned - record.answered_judgments > 0
    assert StudyQuestion.objects.get(study=study).answered_at is None  # the real study is untouched


def test_a_policy_the_question_names_cannot_be_deleted_alone_but_the_study_can(researcher_client):
    study = make_study(k_values=[2])
    named, spare = make_policy(study=study, name="named"), make_policy(study=study, name="spare")
    ask(study, kind="threshold", policy=named, k=2, threshold=0.8)
    page = researcher_client.get(reverse("admin:studies_policy_delete", args=[named.pk])).content.decode()
    assert "Cannot delete policy" in page
    assert "Is named&#x27;s f̂(2) at least 0.8?" in page  # the admin names what stops the deletion
    researcher_client.post(reverse("admin:studies_policy_delete", args=[named.pk]), {"post": "yes"})
    assert Policy.objects.filter(pk=named.pk).exists()
    spare.delete()
    study.delete()
    assert not StudyQuestion.objects.exists()


def test_one_study_whose_check_fails_does_not_stop_the_others(monkeypatch, caplog):
    broken, _ = judged_two_policies({"a": 0.95}, seed=10)
    fine, _ = judged_two_policies({"a": 0.95}, seed=11)
    for study in (broken, fine):
        ask(study, kind="threshold", policy=study.policies.get(), k=2, threshold=0.5)
    real = live.record_if_answered

    def flaky(question_id: int):
        if question_id == broken.question.pk:
            raise RuntimeError("a bad row")
        return real(question_id)

    monkeypatch.setattr(live, "record_if_answered", flaky)
    assert tasks.check_questions() == {"checked": 2, "answered": 1, "paused": 1, "failed": 1}
    assert f"the question of study {broken.slug} failed" in caplog.text
    assert Study.objects.get(pk=fine.pk).status == Study.Status.PAUSED
    assert Study.objects.get(pk=broken.pk).status == Study.Status.LIVE
