"""The LLMdoctor step (issue #15): preference pairs → token rewards → TFPO-trained doctors.

In a study with doctor policies the Prepare chain is

    generate the pool → its population → train the doctors → generate the doctor policies'
    guided candidates → the population of every candidate → fit → items

(`studies.services.pipeline`). This module is the third step and what it needs:

- **pairs**, stored per study as `PreferencePair` sets (`doctor_spec.PairSpec.pair_set`): built
  from the population on the study's pool (`workers.doctor.pairs.pairs_from_population`, per
  type or by the type-weighted rule), from the study's judgments (`pairs_from_judgments`), or
  imported from a CSV (`import_pairs_csv`, every row checked, nothing saved on a bad one);
- **token rewards** from the frozen patient (the study's generator), batched and cached per
  candidate in `TokenRewardCache` under `workers.doctor.rewards.reward_cache_key`;
- **training** (`workers.doctor.tfpo.train_doctor_from_pairs`) in
  `settings.UALIGN_DOCTOR_DIR/<key[:16]>/`, with checkpoints there; a crashed run resumes from
  its last checkpoint when the step runs again, and a doctor whose key (pairs, patient,
  hyper-parameters) is already trained is reused. Progress (step, loss) goes to the job row
  and to the policy's `Doctor` rows.

torch is imported only inside `workers.doctor` and `workers.generation` functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from studies.models import (
    Doctor,
    GeneratorModel,
    Judgment,
    Policy,
    PreferencePair,
    Study,
    TokenRewardCache,
)
from studies.steps import OnProgress, StepError, no_progress
from studies.steps.doctor_spec import (
    DoctorSpec,
    PairSpec,
    doctor_policy_spec,
    parse_doctor_params,
)
from studies.steps.fit import held_out_columns
from studies.steps.pool import load_generator
from studies.steps.population import load_population
from studies.validation import text_problem
from workers import generation
from workers.doctor import pairs as wpairs
from workers.doctor import rewards as wrewards
from workers.doctor import tfpo

# --------------------------------------------------------------------------------------------
# Setup: the doctor policies, their generator rows, their checks


def doctor_policies(study: Study) -> list[Policy]:
    return list(study.policies.filter(kind=Policy.Kind.DOCTOR).select_related("generator", "study__generator")
                .order_by("id"))


def needs_pool_population(study: Study) -> bool:
    """Whether a doctor of the study learns from pairs built on the population of its pool."""
    for policy in doctor_policies(study):
        spec, _ = parse_doctor_params(policy.params)
        if spec is not None and any(d.pairs.source == "population" for d in spec.doctors):
            return True
    return False


def doctor_policy_problems(study: Study, policy: Policy) -> list[str]:
    """Setup rules of a doctor policy beyond its params: its generator row, and pairs to learn from."""
    problems = []
    patient = study.generator
    own = policy.generator
    if own is not None and patient is not None:
        same_model = (own.model_ref, own.revision, own.gguf_file) == (
            patient.model_ref, patient.revision, patient.gguf_file)
        if own.pk == patient.pk:
            problems.append(f"Doctor policy “{policy.name}” needs a generator row of its own (leave it blank and "
                            "Prepare makes one), not the study's.")
        elif not same_model:
            problems.append(f"Doctor policy “{policy.name}”: its generator must name the study's generator model "
                            f"({patient.model_ref}), which the doctors guide; leave it blank and Prepare makes one.")
    spec, _ = parse_doctor_params(policy.params)
    for doctor in spec.doctors if spec is not None else ():
        if doctor.pairs.source == "csv" and not study.preference_pairs.filter(pair_set="csv").exists():
            problems.append(f"Doctor policy “{policy.name}” learns from imported pairs: import a pairs CSV first.")
        if doctor.pairs.source == "judgments" and not judgment_rows(study, doctor.pairs.origin).exists():
            problems.append(f"Doctor policy “{policy.name}” learns from judgments, and the study has none yet.")
    return problems


def ensure_doctor_generators(study: Study) -> None:
    """Give each doctor policy without one a generator row: a copy of the study's generator (the
    patient, whose decoding settings and seed the guided sampling uses) that its candidates are
    saved under."""
    patient = study.generator
    if patient is None:
        return
    for policy in study.policies.filter(kind=Policy.Kind.DOCTOR, generator__isnull=True):
        row, _ = GeneratorModel.objects.get_or_create(
            name=f"llmdoctor:{policy.pk}:{policy.name}"[:100],
            defaults={"model_ref": patient.model_ref, "revision": patient.revision, "gguf_file": patient.gguf_file,
                      "decoding": patient.decoding, "batch_size": patient.batch_size, "seed": patient.seed},
        )
        Policy.objects.filter(pk=policy.pk).update(generator=row)


# --------------------------------------------------------------------------------------------
# Preference pairs


def judgment_rows(study: Study, origin: str) -> Any:
    """The study's judgments that picked a text in a regular item ('real' annotators or 'all')."""
    rows = Judgment.objects.filter(assignment__item__study=study, assignment__item__is_attention_check=False,
                                   cant_decide=False, chosen__isnull=False)
    return rows if origin == "all" else rows.filter(assignment__participant__is_simulated=False)


def population_pairs(study: Study, spec: PairSpec) -> list[wpairs.TextPair]:
    """Pairs of every prompt from its population on the fitted part of the study's pool (μ = multiplicities).

    The pool's held-out texts (`fit.held_out_columns`, the study's `held_out_fraction`) are left
    out, as they are of every fitted policy: the results measure policies against them, so a
    doctor must not have learnt from them either.
    """
    out: list[wpairs.TextPair] = []
    for prompt in study.prompts.order_by("id"):
        pp = load_population(prompt)
        pool = held_out_columns(study, pp)
        columns = pool.fitted
        if len(columns) < 2:
            continue
        texts = [pp.candidates[i].text for i in columns]
        out += wpairs.pairs_from_population(
            prompt.text, texts, pp.pop.utilities[:, columns], pp.pop.weights,
            rule="weighted" if spec.rule == "weighted" else "per_type",
            mode="all" if spec.mode == "all" else "extremes",
            labels=list(prompt.population.type_labels),
            reference=[float(pp.candidates[i].multiplicity) for i in columns],
        )  # fmt: skip
    return out


def judgment_pairs(study: Study, origin: str) -> list[wpairs.TextPair]:
    """The picked text against each shown text not picked, per judgment, in judgment order."""
    records = []
    rows = judgment_rows(study, origin).select_related("chosen__candidate", "assignment__item__prompt")
    for judgment in rows.order_by("id"):
        item = judgment.assignment.item
        shown = tuple(item.shown.order_by("slot").values_list("candidate__text", flat=True))
        picked = judgment.chosen.candidate.text if judgment.chosen is not None else None
        records.append(wpairs.JudgmentRecord(item.prompt.text, shown, picked))
    return wpairs.pairs_from_judgments(records)


def store_pairs(study: Study, pair_set: str, pairs: Sequence[wpairs.TextPair]) -> int:
    """Replace the study's pair set with `pairs`, in order, in one transaction."""
    prompts = {p.text: p for p in study.prompts.all()}
    with transaction.atomic():
        study.preference_pairs.filter(pair_set=pair_set).delete()
        PreferencePair.objects.bulk_create(
            PreferencePair(study=study, pair_set=pair_set, prompt=prompts.get(p.prompt), prompt_text=p.prompt,
                           chosen=p.chosen, rejected=p.rejected, weight=p.weight, source=p.source[:300])
            for p in pairs
        )
    return len(pairs)


def refresh_pairs(study: Study, spec: PairSpec) -> None:
    """Rebuild a derived pair set (population or judgments) from the study as it is now."""
    if spec.source == "population":
        store_pairs(study, spec.pair_set, population_pairs(study, spec))
    elif spec.source == "judgments":
        store_pairs(study, spec.pair_set, judgment_pairs(study, spec.origin))


def stored_pairs(study: Study, spec: PairSpec) -> list[wpairs.TextPair]:
    """The pairs a doctor learns from: its set, in order, only the listed types' when it names some.

    A type is named by its population label ("embedding-3: child") or by the label without its
    source's prefix ("child"), which params written before the sources exist (the demo's) can use;
    a bare label names that type in every source that has it.
    """
    rows = study.preference_pairs.filter(pair_set=spec.pair_set).order_by("id")
    if spec.types:
        named = Q(source__in=[f"type:{t}" for t in spec.types])
        for t in spec.types:
            named |= Q(source__startswith="type:", source__endswith=f": {t}")
        rows = rows.filter(named)
    return [wpairs.TextPair(r.prompt_text, r.chosen, r.rejected, r.weight, r.source) for r in rows]


@dataclasses.dataclass
class PairsImport:
    """The outcome of a pairs CSV import: pairs saved, or the problems (and nothing saved)."""

    created: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def import_pairs_csv(study: Study, data: bytes) -> PairsImport:
    """Check every row of a pairs CSV (`prompt,chosen,rejected[,weight,source]`); when all are
    good, they replace the study's imported pairs ("csv" set); otherwise nothing is saved.

    The pairs train the doctors that sample candidates, so they are part of the design: a study
    whose design is fixed (`Study.design_fixed_message`: not a draft, or items built) refuses them.
    """
    fixed = study.design_fixed_message()
    if fixed:
        return PairsImport(errors=[fixed])
    try:
        pairs = wpairs.read_pairs_csv(data, max_rows=settings.UALIGN_IMPORT_MAX_ROWS,
                                      max_field_chars=settings.UALIGN_IMPORT_MAX_FIELD_CHARS)
    except wpairs.PairsCSVError as exc:
        return PairsImport(errors=[str(e) for e in exc.errors])
    errors = []
    for n, pair in enumerate(pairs, start=1):
        for name in ("prompt", "chosen", "rejected", "source"):
            problem = text_problem(getattr(pair, name))
            if problem:
                errors.append(f"pair {n}: {name} {problem}")
    if not pairs:
        errors.append("the file has no pairs")
    if errors:
        return PairsImport(errors=errors[:50])
    with transaction.atomic():  # the rule again, under the study's lock: it may have gone live meanwhile
        fixed = Study.objects.select_for_update().get(pk=study.pk).design_fixed_message()
        if fixed:
            return PairsImport(errors=[fixed])
        return PairsImport(created=store_pairs(study, "csv", pairs))


# --------------------------------------------------------------------------------------------
# Token rewards, cached in the database


class StoredRewards(MutableMapping[str, wrewards.TokenRewards]):
    """`TokenRewardCache` rows as the mapping `workers.doctor.rewards.score_responses` fills.

    The rows for `keys` are read in one query up front; new entries are written at once
    (a concurrent writer of the same key is ignored: the content is a function of the key).
    """

    def __init__(self, keys: Sequence[str]) -> None:
        self._data = {
            key: wrewards.TokenRewards.from_json(data)
            for key, data in TokenRewardCache.objects.filter(key__in=set(keys)).values_list("key", "rewards")
        }
        self.hits = len(self._data)
        self.written = 0

    def __getitem__(self, key: str) -> wrewards.TokenRewards:
        return self._data[key]

    def __setitem__(self, key: str, value: wrewards.TokenRewards) -> None:
        TokenRewardCache.objects.bulk_create([TokenRewardCache(key=key, rewards=value.to_json())],
                                             ignore_conflicts=True)
        self._data[key] = value
        self.written += 1

    def __delitem__(self, key: str) -> None:
        raise TypeError("token rewards are never removed from the cache")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


# --------------------------------------------------------------------------------------------
# Training


def doctor_root() -> Path:
    return Path(settings.UALIGN_DOCTOR_DIR)


def _doctor_row(policy: Policy, position: int, spec: DoctorSpec, key: str, pairs: int) -> Doctor:
    """The policy's row for this doctor, reset when it last held a doctor of another key."""
    row, created = Doctor.objects.get_or_create(policy=policy, position=position)
    if created or row.key != key:
        row.status, row.path, row.history, row.step, row.loss = Doctor.Status.PENDING, "", [], 0, None
        row.resumed_from, row.seconds = None, None
    row.spec, row.key, row.pairs, row.steps = spec.training_record(), key, pairs, spec.tfpo.steps
    row.save()
    return row


def _record_trained(row: Doctor, trained: tfpo.TrainedDoctor) -> None:
    history = [dataclasses.asdict(h) for h in trained.history]
    row.status, row.path = Doctor.Status.DONE, str(trained.path)
    row.step, row.history = (history[-1]["step"] if history else row.steps), history
    row.loss = history[-1]["loss"] if history else None
    if not trained.reused:
        row.seconds = round(trained.seconds, 3)
    row.save()


@dataclasses.dataclass
class _Progress:
    """Reports each training step to the job (via `on_progress`) and to the doctor's row."""

    row: Doctor
    on_progress: OnProgress
    label: str
    done: float
    total: float
    first_step: int | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __call__(self, step: tfpo.StepLoss) -> None:
        if self.first_step is None:
            self.first_step = step.step
            resumed = step.step - 1 if step.step > 1 else None
            Doctor.objects.filter(pk=self.row.pk).update(resumed_from=resumed)
        # The curve so far (from this run's first step), so the admin can draw it while it trains.
        self.history.append(dataclasses.asdict(step))
        Doctor.objects.filter(pk=self.row.pk).update(status=Doctor.Status.TRAINING, step=step.step, loss=step.loss,
                                                     history=self.history)
        message = f"{self.label}: step {step.step} of {step.steps}, loss {step.loss:.4g}"
        self.on_progress(self.done + step.step / step.steps, self.total, message)


def train_policy_doctor(policy: Policy, position: int, spec: DoctorSpec, patient: generation.ModelHandle, *,
                        on_progress: OnProgress, done: float, total: float) -> dict[str, Any]:
    """Train (or find) one doctor of a policy; returns its record for the job's result."""
    study = policy.study
    pairs = stored_pairs(study, spec.pairs)
    if not pairs:
        raise StepError(f"policy {policy.name}: doctor {position} has no preference pairs "
                        f"(set {spec.pairs.pair_set}{', types ' + ', '.join(spec.pairs.types) if spec.pairs.types else ''})")
    key = tfpo.doctor_key(pairs, patient, spec.rewards, spec.tfpo)
    row = _doctor_row(policy, position, spec, key, len(pairs))
    label = f"Doctor {position + 1} of policy {policy.name}"
    if row.status == Doctor.Status.DONE and Path(row.path, "doctor.json").is_file():
        return {"policy": policy.name, "position": position, "key": key, "reused": True, "pairs": len(pairs)}
    if row.status == Doctor.Status.DONE:
        row.status = Doctor.Status.PENDING
        row.save(update_fields=["status"])
    cache_keys = [wrewards.reward_cache_key(patient, p.prompt, text, spec.rewards)
                  for p in pairs for text in (p.chosen, p.rejected)]
    cache = StoredRewards(cache_keys)
    on_progress(done, total, f"{label}: token rewards for {len(pairs)} pairs")
    progress = _Progress(row, on_progress, label, done, total)
    try:
        trained = tfpo.train_doctor_from_pairs(
            patient, pairs, root=doctor_root(), reward_config=spec.rewards, config=spec.tfpo, cache=cache,
            progress=progress, batch_size=study.generator.batch_size if study.generator else 8,
        )  # fmt: skip
    except ValueError as exc:
        raise StepError(f"policy {policy.name}: doctor {position}: {exc}") from exc
    row.refresh_from_db()
    _record_trained(row, trained)
    return {"policy": policy.name, "position": position, "key": key, "reused": trained.reused, "pairs": len(pairs),
            "rewards_cached": cache.hits, "rewards_computed": cache.written, "resumed_from": row.resumed_from,
            "loss": row.loss, "seconds": row.seconds}


def train_doctors(study: Study, *, on_progress: OnProgress = no_progress) -> dict[str, Any]:
    """Build the derived pair sets, then train every doctor of every doctor policy that is missing.

    Progress counts one unit per doctor; a doctor already trained with the same key is reused.
    """
    policies = doctor_policies(study)
    if not policies:
        return {"doctors": []}
    if study.generator is None:
        raise StepError("the study has no generator (the patient the doctors guide)")
    specs = [(policy, doctor_policy_spec(policy)) for policy in policies]
    for pair_spec in {d.pairs.pair_set: d.pairs for _, spec in specs for d in spec.doctors}.values():
        refresh_pairs(study, pair_spec)
    patient = load_generator(study.generator)
    total = float(sum(len(spec.doctors) for _, spec in specs))
    records: list[dict[str, Any]] = []
    for policy, spec in specs:
        Doctor.objects.filter(policy=policy, position__gte=len(spec.doctors)).delete()
        for position, doctor in enumerate(spec.doctors):
            records.append(train_policy_doctor(policy, position, doctor, patient, on_progress=on_progress,
                                               done=float(len(records)), total=total))
    return {"doctors": records, "trained": sum(not r["reused"] for r in records)}

