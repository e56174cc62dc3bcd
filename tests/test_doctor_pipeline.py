"""LLMdoctor in a study (issue #15 phase 2): pairs, token rewards, training and guided candidates
through the Prepare chain's steps, called directly with ids, on a tiny random patient."""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from studies import services
from studies.estimate.results import compute_results
from studies.models import (
    Candidate,
    ComparisonItem,
    Doctor,
    Job,
    Policy,
    PolicyFit,
    PreferencePair,
    Study,
    TokenRewardCache,
)
from studies.steps import StepError
from studies.steps import doctor as doctor_step
from studies.steps.doctor_spec import parse_doctor_params
from studies.steps.fit import (
    MIN_POOL_FOR_HELD_OUT,
    held_out_columns,
    policy_params_problems,
)
from studies.steps.population import load_population
from studies.tasks import STEP_TASKS
from tests.factories import make_participant, make_policy, make_study
from tests.judgments import make_judgment
from tests.pipeline import REWARDS, TFPO, doctor_study

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def doctor_dir(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")
    settings.UALIGN_DOCTOR_DIR = str(tmp_path / "doctors")
    return tmp_path / "doctors"


def run_chain(parent: Job) -> None:
    """Run the chain's steps in order, as the worker would, each after the one before."""
    for step in parent.steps.order_by("id"):
        STEP_TASKS[step.kind](step.pk)
        step.refresh_from_db()
        assert step.status == Job.Status.DONE, step.error


def test_a_doctor_policy_makes_prepare_train_its_doctor_between_the_pool_and_its_own_candidates(tiny_model):
    # A pool large enough to hold a share out (MIN_POOL_FOR_HELD_OUT distinct texts), so the test
    # below can check that the held-out texts never reach the pairs.
    study = doctor_study(tiny_model, pool=MIN_POOL_FOR_HELD_OUT + 2)
    parent = services.prepare_study(study=study)
    steps = list(parent.steps.order_by("id"))
    assert [s.kind for s in steps] == ["generate", "populate", "train_doctors", "generate", "populate", "fit",
                                       "build_items"]
    assert [s.params.get("doctors") for s in steps[:4:3]] == [False, True]
    policy = study.policies.get(name="doctor")
    assert policy.generator is not None  # Prepare gave it a row for its candidates…
    assert policy.generator.model_ref == study.generator.model_ref  # …sampled by the patient

    run_chain(parent)

    study.refresh_from_db()
    assert study.status == Study.Status.READY
    pairs = PreferencePair.objects.filter(study=study, pair_set="population:per_type:extremes")
    assert pairs.exists()
    assert all(p.source.startswith("type:persona_judge") for p in pairs)
    pool_texts = set(Candidate.objects.filter(generator=study.generator).values_list("text", flat=True))
    assert all(p.chosen in pool_texts and p.rejected in pool_texts for p in pairs)
    # The pool's held-out share (what the results measure policies against) never reaches the pairs.
    held_out = set()
    for prompt in study.prompts.all():
        pp = load_population(prompt)
        held_out |= {pp.candidates[int(i)].text for i in held_out_columns(study, pp).held_out}
    assert held_out
    assert not {t for p in pairs for t in (p.chosen, p.rejected)} & held_out
    # Token rewards: one cache row per distinct (prompt, text) of the pairs.
    distinct = {(p.prompt_text, t) for p in pairs for t in (p.chosen, p.rejected)}
    assert TokenRewardCache.objects.count() == len(distinct)

    doctor = Doctor.objects.get(policy=policy)
    assert doctor.status == Doctor.Status.DONE
    assert len(doctor.key) == 64
    assert [h["step"] for h in doctor.history] == [1, 2, 3, 4]
    assert doctor.loss == doctor.history[-1]["loss"]
    assert Path(doctor.path, "doctor.json").is_file()
    assert doctor.resumed_from is None
    train = parent.steps.get(kind="train_doctors")
    assert "step 4 of 4" in train.progress_message
    assert train.result["doctors"][0]["key"] == doctor.key

    guided = Candidate.objects.filter(generator=policy.generator)
    assert sum(guided.values_list("multiplicity", flat=True)) == study.pool_size * study.prompts.count()
    meta = guided.first().metadata
    assert meta["model"]["ref"] == str(tiny_model)  # the patient samples…
    assert [(g["ref"], g["beta"]) for g in meta["guides"]] == [(doctor.path, 0.7)]  # …guided by the trained doctor
    assert meta["alpha"] == 0.5
    fit = PolicyFit.objects.get(policy=policy, k=1, prompt=study.prompts.first())
    by_id = dict(zip(fit.candidate_ids, fit.probabilities, strict=True))
    assert sum(by_id[c.pk] for c in guided.filter(prompt=fit.prompt)) == pytest.approx(1)
    # Items like any other policy's: per prompt and k, one against the adversary and each other policy.
    assert ComparisonItem.objects.filter(policy=policy).count() == study.prompts.count() * 2 * 3
    assert ComparisonItem.objects.filter(opponent_policy=policy).exists()


    # Judged like any other policy, it gets its f̂(k) on the results page.
    for n in range(3):
        participant = make_participant(study=study)
        for item in ComparisonItem.objects.filter(study=study, needs_judgment=True):
            make_judgment(item=item, participant=participant, pick=n % item.shown.count())
    robust = [r for r in compute_results(study).robust if r.policy == "doctor"]
    assert sorted(r.k for r in robust) == [1, 2]
    assert all(0 <= r.result.estimate <= 1 and not r.missing_opponents for r in robust)


def test_pressing_prepare_again_reuses_the_trained_doctor_and_its_cached_rewards(tiny_model):
    study = doctor_study(tiny_model, n_prompts=1)
    run_chain(services.prepare_study(study=study))
    first = Doctor.objects.get(policy__study=study)
    cached = TokenRewardCache.objects.count()

    parent = services.prepare_study(study=Study.objects.get(pk=study.pk))
    run_chain(parent)

    again = Doctor.objects.get(pk=first.pk)
    assert (again.key, again.path, again.seconds, again.history) == (first.key, first.path, first.seconds,
                                                                    first.history)
    record = parent.steps.get(kind="train_doctors").result["doctors"][0]
    assert record["reused"] is True
    assert TokenRewardCache.objects.count() == cached
    assert Study.objects.get(pk=study.pk).status == Study.Status.READY


def test_a_crashed_training_resumes_from_its_last_checkpoint_when_the_step_runs_again(tiny_model, monkeypatch):
    study = doctor_study(tiny_model, n_prompts=1)
    parent = services.prepare_study(study=study)
    steps = list(parent.steps.order_by("id"))
    for step in steps[:2]:
        STEP_TASKS[step.kind](step.pk)
    train = steps[2]

    calls = []

    def crash_after_three(self, step):  # the worker dies after step 3 (its checkpoint is at step 2)
        calls.append(step.step)
        if step.step == 3:
            raise KeyboardInterrupt("worker killed")
        return original(self, step)

    original = doctor_step._Progress.__call__
    monkeypatch.setattr(doctor_step._Progress, "__call__", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        STEP_TASKS[train.kind](train.pk)
    monkeypatch.setattr(doctor_step._Progress, "__call__", original)
    assert Doctor.objects.get(policy__study=study).status == Doctor.Status.TRAINING
    # The re-delivered task finds the job running with a stale heartbeat and reclaims it.
    Job.objects.filter(pk=train.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    STEP_TASKS[train.kind](train.pk)

    train.refresh_from_db()
    assert train.status == Job.Status.DONE
    assert train.attempts == 2
    doctor = Doctor.objects.get(policy__study=study)
    assert doctor.resumed_from == 2
    assert [h["step"] for h in doctor.history] == [1, 2, 3, 4]


def test_several_doctors_each_have_their_own_pairs_and_weight(tiny_model):
    study = doctor_study(tiny_model, n_prompts=1, params={"alpha": 1.0, "doctors": [
        {"beta": 0.3, "pairs": {"from": "population", "types": []}, "rewards": REWARDS, "tfpo": TFPO},
        {"beta": 0.5, "pairs": {"from": "population", "rule": "weighted"}, "rewards": REWARDS, "tfpo": TFPO},
    ]})
    run_chain(services.prepare_study(study=study))

    policy = study.policies.get(name="doctor")
    doctors = list(Doctor.objects.filter(policy=policy).order_by("position"))
    assert len(doctors) == 2
    assert doctors[0].key != doctors[1].key
    assert PreferencePair.objects.filter(study=study, pair_set="population:weighted").exists()
    meta = Candidate.objects.filter(generator=policy.generator).first().metadata
    assert [(g["ref"], g["beta"]) for g in meta["guides"]] == [(doctors[0].path, 0.3), (doctors[1].path, 0.5)]


def test_one_persona_s_doctor_learns_only_from_that_type_s_pairs(tiny_model):
    study = doctor_study(tiny_model, n_prompts=1)
    services.prepare_study(study=study)
    for step in Job.objects.filter(study=study).exclude(kind="prepare").order_by("id")[:2]:
        STEP_TASKS[step.kind](step.pk)
    label = study.prompts.get().population.type_labels[0]
    doctor_step.refresh_pairs(study, doctor_step.PairSpec())
    spec = doctor_step.PairSpec(types=(label,))
    picked = doctor_step.stored_pairs(study, spec)
    everything = doctor_step.stored_pairs(study, doctor_step.PairSpec())
    assert picked
    assert len(picked) < len(everything)
    assert {p.source for p in picked} == {f"type:{label}"}
    # The label without its source's prefix ("persona_judge-3: x" → "x") names the same type.
    bare = label.split(": ", 1)[1]
    assert doctor_step.stored_pairs(study, doctor_step.PairSpec(types=(bare,))) == picked


def test_changing_a_doctor_s_weight_after_its_candidates_exist_is_refused_not_ignored(tiny_model):
    study = doctor_study(tiny_model, n_prompts=1)
    run_chain(services.prepare_study(study=study))
    policy = study.policies.get(name="doctor")
    policy.params = {**policy.params, "beta": 0.2}
    policy.save()

    parent = services.prepare_study(study=Study.objects.get(pk=study.pk))
    for step in parent.steps.order_by("id"):
        if step.kind == "generate" and step.params["doctors"]:
            with pytest.raises(StepError, match="other doctors or weights"):
                STEP_TASKS[step.kind](step.pk)
            break
        STEP_TASKS[step.kind](step.pk)
    assert Study.objects.get(pk=study.pk).status == Study.Status.DRAFT


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"beta": 0}, "beta must be"),
        ({"alpha": -1}, "alpha must be"),
        ({"pairs": {"from": "nowhere"}}, "pairs.from must be"),
        ({"pairs": {"from": "judgments", "rule": "weighted"}}, "unknown key 'rule'"),
        ({"rewards": {"tau": 0}}, "rewards.tau"),
        ({"rewards": {"gamma": 1}}, "unknown key(s) 'gamma'"),
        ({"tfpo": {"steps": 0}}, "tfpo.steps"),
        ({"tfpo": {"system_prompt": "x"}}, "unknown key(s) 'system_prompt'"),
        ({"doctors": []}, "non-empty list"),
        ({"doctors": [{"beta": 1}], "beta": 1}, "inside each of"),
        ({"doctors": [{"beta": 1}, {"beta": -2}]}, "doctors[1].beta must be"),
        ({"guide": "x"}, "unknown param 'guide'"),
    ],
)
def test_doctor_params_are_checked_with_readable_messages(params, fragment):
    spec, problems = parse_doctor_params(params)
    assert spec is None
    assert any(fragment in p for p in problems), problems


def test_valid_doctor_params_give_one_spec_per_doctor():
    spec, problems = parse_doctor_params({"alpha": 0.4, "doctors": [
        {"beta": 0.5, "pairs": {"from": "judgments", "origin": "all"}, "tfpo": {"steps": 3, "lora_targets": ["q_proj"]}},
        {"pairs": {"from": "csv"}, "rewards": {"tau": 2.0, "theta": 0.0}},
    ]})
    assert problems == []
    assert spec.alpha == 0.4
    assert [d.beta for d in spec.doctors] == [0.5, 0.6]
    assert [d.pairs.pair_set for d in spec.doctors] == ["judgments:all", "csv"]
    assert spec.doctors[0].tfpo.lora_targets == ("q_proj",)
    assert spec.doctors[1].rewards.tau == 2.0
    assert parse_doctor_params({})[1] == []


def test_alpha_defaults_to_one_minus_the_doctors_betas():
    # Steering without sharpening: with the weights summing to 1 an untrained doctor is plain sampling.
    assert parse_doctor_params({})[0].alpha == pytest.approx(1 - 0.6)
    two = parse_doctor_params({"doctors": [{"beta": 0.25}, {"beta": 0.5}]})[0]
    assert two.alpha == pytest.approx(0.25)
    assert parse_doctor_params({"beta": 1.0})[0].alpha == 0.0
    # Given explicitly, α is kept, the method's α = 1 included.
    assert parse_doctor_params({"alpha": 1, "beta": 0.6})[0].alpha == 1.0


def test_betas_over_one_without_alpha_ask_for_alpha():
    spec, problems = parse_doctor_params({"doctors": [{"beta": 0.8}, {"beta": 0.7}]})
    assert spec is None
    assert any("sum to 1.5" in p and "give alpha explicitly" in p for p in problems), problems
    assert parse_doctor_params({"alpha": 1, "doctors": [{"beta": 0.8}, {"beta": 0.7}]})[1] == []


def test_migration_writes_alpha_one_into_doctor_policies_saved_without_it(db):
    from django.apps import apps

    migration = importlib.import_module("studies.migrations.0019_doctor_alpha_explicit")
    study = make_study()
    old = make_policy(study=study, name="old", kind=Policy.Kind.DOCTOR, params={"beta": 0.6})
    explicit = make_policy(study=study, name="explicit", kind=Policy.Kind.DOCTOR, params={"alpha": 0.3})
    other = make_policy(study=study, name="ctrl", kind=Policy.Kind.CTRL, params={})
    migration.write_alpha_one(apps, None)
    assert Policy.objects.get(pk=old.pk).params == {"beta": 0.6, "alpha": 1.0}
    assert Policy.objects.get(pk=explicit.pk).params == {"alpha": 0.3}
    assert Policy.objects.get(pk=other.pk).params == {}


def test_prepare_refuses_a_doctor_without_pairs_to_learn_from_or_with_another_model(tiny_model):
    study = doctor_study(tiny_model, params={"pairs": {"from": "csv"}})
    make_policy(study=study, name="judged", kind=Policy.Kind.DOCTOR, params={"pairs": {"from": "judgments"}})
    other = study.generator.__class__.objects.create(name="another", model_ref="somewhere-else")
    make_policy(study=study, name="elsewhere", kind=Policy.Kind.DOCTOR, generator=other)
    make_policy(study=study, name="bad", kind=Policy.Kind.DOCTOR, params={"beta": "high"})
    with pytest.raises(services.PreparationError) as caught:
        services.prepare_study(study=study)
    text = " ".join(caught.value.problems)
    assert "import a pairs CSV first" in text
    assert "learns from judgments, and the study has none yet" in text
    assert "must name the study's generator model" in text
    assert "Policy “bad”: beta must be" in text
    assert policy_params_problems(study.policies.get(name="doctor")) == []


def test_training_runs_on_the_gpu_queue():
    from ualign_web.celery import app

    assert app.amqp.router.route({}, STEP_TASKS[Job.Kind.TRAIN_DOCTORS].name)["queue"].name == "gpu"


def test_a_doctor_in_training_shows_its_curve_so_far():
    from studies.steps.doctor import _Progress
    from tests.factories import make_study
    from workers.doctor.curve import history_svg
    from workers.doctor.tfpo import StepLoss

    policy = make_policy(study=make_study(), name="doctor", kind=Policy.Kind.DOCTOR, params={})
    row = Doctor.objects.create(policy=policy, position=0, steps=3)
    messages = []
    progress = _Progress(row, lambda done, total, message: messages.append(message), "Doctor 1", 0.0, 1.0)
    progress(StepLoss(1, 3, 5.0, 4.9, 0.1))
    progress(StepLoss(2, 3, 4.0, 3.95, 0.05, margin=0.2))
    row.refresh_from_db()
    assert row.status == Doctor.Status.TRAINING
    assert [(h["step"], h["loss"], h["margin"]) for h in row.history] == [(1, 5.0, None), (2, 4.0, 0.2)]
    assert history_svg(row.history).count("<polyline") == 3
    assert messages[-1] == "Doctor 1: step 2 of 3, loss 4"
