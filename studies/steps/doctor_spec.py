"""What a doctor policy's params say (LLMdoctor, issue #15), and the trained doctors they resolve to.

A doctor policy samples from the study's generator (the frozen *patient*) guided by one or more
trained doctors: ``α·log π_patient + Σ_j β_j·log π_doctor_j`` (`workers.doctor.guided`). Its
params, as JSON:

    {"alpha": 0.4,                        # optional, default 1 − Σβ (steering without sharpening)
     "beta": 0.6,                         # one doctor: its weight (default 0.6) …
     "pairs": {"from": "population"},     # … where its training pairs come from
     "rewards": {"tau": 1.0, "theta": 0.1},   # RewardConfig fields (token rewards)
     "tfpo": {"steps": 200}}              # TFPOConfig fields (the doctor and its training)

or, for several doctors, ``{"alpha": 0.2, "doctors": [{"beta": …, "pairs": …, "rewards": …,
"tfpo": …}, …]}``. ``pairs`` takes ``from``: ``"population"`` (the study's population on its
pool; ``rule`` "per_type" (default) or "weighted", ``mode`` "extremes" (default) or "all"),
``"judgments"`` (``origin`` "real" (default) or "all") or ``"csv"`` (the pairs imported on the
study's page); and ``types``, a list of population type labels that keeps only those types'
pairs (one persona's doctor, say). The doctor's context in training is the decoding's system
prompt (the policy's generator's ``decoding.system_prompt``); every other TFPOConfig field may
be set here. Defaults: docs/llmdoctor.md.

Imports neither torch nor the training code: `studies.steps.fit` validates params with it and
`studies.steps.pool` resolves a policy's guides with it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from studies.models import Doctor, Policy
from studies.steps import StepError
from workers.doctor.rewards import RewardConfig
from workers.doctor.tfpo import TFPOConfig

DEFAULT_BETA = 0.6
# Without "alpha" the patient's weight is 1 − Σβ: with the weights summing to 1 an untrained doctor
# reproduces plain sampling, and guidance steers without sharpening the patient. The method's
# α = 1 also sharpens, which cost diversity and bought no reward on held-out prompts in
# `make bench-doctor-effect` (docs/llmdoctor.md, "Defaults"). Policies saved before this default
# had α = 1 written into their params (migration 0019), so they decode as they did.
DEFAULT_ALPHA_RULE = "1 − Σβ"

PARAMS_HELP: dict[str, str] = {
    "alpha": f"a number ≥ 0, the patient's weight (default {DEFAULT_ALPHA_RULE}, so the weights sum to 1)",
    "beta": f"a number > 0, the doctor's weight (default {DEFAULT_BETA})",
    "pairs": 'an object: {"from": "population" | "judgments" | "csv", …} (default population, per type)',
    "rewards": "an object of token-reward settings (tau, theta, positive_system, negative_system, max_response_tokens)",
    "tfpo": "an object of TFPO settings (steps, pairs_per_step, learning_rate, lora_rank, …)",
    "doctors": "a list of doctors, each an object with beta, pairs, rewards and tfpo (instead of those keys)",
}
_ONE_DOCTOR = ("beta", "pairs", "rewards", "tfpo")
_PAIR_KEYS = {
    "population": {"from", "rule", "mode", "types"},
    "judgments": {"from", "origin", "types"},
    "csv": {"from", "types"},
}
_REWARD_FIELDS = {f.name for f in dataclasses.fields(RewardConfig)}
# The doctor's context is the decoding's own system prompt, not a free parameter.
_TFPO_FIELDS = {f.name for f in dataclasses.fields(TFPOConfig)} - {"system_prompt"}


@dataclasses.dataclass(frozen=True)
class PairSpec:
    """Where a doctor's preference pairs come from."""

    source: str = "population"
    rule: str = "per_type"
    mode: str = "extremes"
    origin: str = "real"
    types: tuple[str, ...] = ()

    @property
    def pair_set(self) -> str:
        """The stored set these pairs are read from (`PreferencePair.pair_set`)."""
        if self.source == "population":
            return "population:weighted" if self.rule == "weighted" else f"population:per_type:{self.mode}"
        if self.source == "judgments":
            return f"judgments:{self.origin}"
        return "csv"


@dataclasses.dataclass(frozen=True)
class DoctorSpec:
    """One doctor of a policy: its decoding weight, pairs and training settings."""

    beta: float
    pairs: PairSpec
    rewards: RewardConfig
    tfpo: TFPOConfig

    def training_record(self) -> dict[str, Any]:
        """What the doctor's training depends on besides the pairs' texts (β only weighs decoding),
        as stored JSON (tuples become lists)."""
        record = {
            "pairs": dataclasses.asdict(self.pairs),
            "rewards": dataclasses.asdict(self.rewards),
            "tfpo": dataclasses.asdict(self.tfpo),
        }
        loaded: dict[str, Any] = json.loads(json.dumps(record))
        return loaded


@dataclasses.dataclass(frozen=True)
class DoctorPolicySpec:
    alpha: float
    doctors: tuple[DoctorSpec, ...]


def _number(value: Any, *, strict: bool) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return ok and (value > 0 if strict else value >= 0)


def _pairs(raw: Any, where: str) -> tuple[PairSpec | None, list[str]]:
    if raw is None:
        return PairSpec(), []
    if not isinstance(raw, Mapping):
        return None, [f"{where}pairs must be an object such as {{\"from\": \"population\"}}."]
    source = raw.get("from", "population")
    if source not in _PAIR_KEYS:
        return None, [f"{where}pairs.from must be population, judgments or csv, not {source!r}."]
    problems = [f"{where}pairs: unknown key {k!r} for pairs from {source}." for k in raw if k not in _PAIR_KEYS[source]]
    choices = {"rule": ("per_type", "weighted"), "mode": ("extremes", "all"), "origin": ("real", "all")}
    for key, allowed in choices.items():
        if key in raw and raw[key] not in allowed:
            problems.append(f"{where}pairs.{key} must be one of {', '.join(allowed)}.")
    types = raw.get("types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
        problems.append(f"{where}pairs.types must be a list of type labels.")
        types = []
    if problems:
        return None, problems
    spec = PairSpec(source, raw.get("rule", "per_type"), raw.get("mode", "extremes"), raw.get("origin", "real"),
                    tuple(types))
    return spec, []


def _config(cls: type, fields: set[str], raw: Any, name: str, where: str) -> tuple[Any, list[str]]:
    """A RewardConfig / TFPOConfig from a params object; its own checks give the messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return None, [f"{where}{name} must be an object."]
    unknown = sorted(k for k in raw if k not in fields)
    if unknown:
        return None, [f"{where}{name}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(fields))}."]
    values = dict(raw)
    if isinstance(values.get("lora_targets"), list):
        values["lora_targets"] = tuple(values["lora_targets"])
    for key in ("positive_system", "negative_system", "doctor_ref"):
        if key in values and values[key] is not None and not isinstance(values[key], str):
            return None, [f"{where}{name}.{key} must be a string."]
    try:
        return cls(**values), []
    except (TypeError, ValueError) as exc:
        return None, [f"{where}{name}.{exc}"]


def _doctor(raw: Mapping[str, Any], where: str) -> tuple[DoctorSpec | None, list[str]]:
    beta = raw.get("beta", DEFAULT_BETA)
    problems = [] if _number(beta, strict=True) else [f"{where}beta must be {PARAMS_HELP['beta']}."]
    pairs, more = _pairs(raw.get("pairs"), where)
    rewards, reward_problems = _config(RewardConfig, _REWARD_FIELDS, raw.get("rewards"), "rewards", where)
    tfpo, tfpo_problems = _config(TFPOConfig, _TFPO_FIELDS, raw.get("tfpo"), "tfpo", where)
    problems += more + reward_problems + tfpo_problems
    if problems or pairs is None:
        return None, problems
    return DoctorSpec(float(beta), pairs, rewards, tfpo), []


def parse_doctor_params(params: Mapping[str, Any] | None) -> tuple[DoctorPolicySpec | None, list[str]]:
    """The doctor policy's spec, or None and readable problems (the module docstring's format)."""
    params = params or {}
    unknown = [k for k in params if k not in PARAMS_HELP]
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in PARAMS_HELP.items())
        return None, [f"unknown param {k!r}; doctor takes {known}." for k in unknown]
    alpha = params.get("alpha")
    problems = [] if alpha is None or _number(alpha, strict=False) else [f"alpha must be {PARAMS_HELP['alpha']}."]
    if "doctors" in params:
        mixed = [k for k in _ONE_DOCTOR if k in params]
        if mixed:
            return None, [f"give {', '.join(mixed)} inside each of \"doctors\", not beside it."]
        raw = params["doctors"]
        if not isinstance(raw, list) or not raw or not all(isinstance(d, Mapping) for d in raw):
            return None, ["doctors must be a non-empty list of objects."]
        entries = [(d, f"doctors[{i}].") for i, d in enumerate(raw)]
    else:
        entries = [(params, "")]
    doctors = []
    for raw_doctor, where in entries:
        doctor, more = _doctor(raw_doctor, where)
        problems += more
        if doctor is not None:
            doctors.append(doctor)
    if problems:
        return None, problems
    if alpha is None:
        weight, problems = _default_alpha(doctors)
        return (None, problems) if problems else (DoctorPolicySpec(weight, tuple(doctors)), [])
    return DoctorPolicySpec(float(alpha), tuple(doctors)), []


def _default_alpha(doctors: list[DoctorSpec]) -> tuple[float, list[str]]:
    """α = 1 − Σβ, or a problem when the doctors' weights already sum to more than 1."""
    total = math.fsum(d.beta for d in doctors)
    if total > 1 + 1e-12:
        return 0.0, [f"the doctors' beta sum to {total:g}, more than 1, so the default alpha (1 − Σβ) would be "
                     "negative: give alpha explicitly (alpha = 1 is the method's, which also sharpens the patient)."]
    return max(0.0, 1.0 - total), []


def doctor_policy_spec(policy: Policy) -> DoctorPolicySpec:
    """The parsed params of a doctor policy, each doctor's context set to the decoding's system
    prompt (the policy's generator's, else the study's); StepError when the params are invalid."""
    spec, problems = parse_doctor_params(policy.params)
    if spec is None:
        raise StepError(f"policy {policy.name}: " + " ".join(problems))
    generator = policy.generator or policy.study.generator
    system_prompt = (generator.decoding or {}).get("system_prompt") if generator is not None else None
    doctors = tuple(
        dataclasses.replace(d, tfpo=dataclasses.replace(d.tfpo, system_prompt=system_prompt or None))
        for d in spec.doctors
    )
    return DoctorPolicySpec(spec.alpha, doctors)


def doctor_guides(policy: Policy) -> tuple[float, list[tuple[str, float]]]:
    """α and the (trained doctor folder, β) pairs a doctor policy decodes with.

    Every doctor of the params must have been trained with its current training params (the
    TRAIN_DOCTORS step does that); otherwise a StepError says which one is missing.
    """
    spec = doctor_policy_spec(policy)
    rows = {d.position: d for d in Doctor.objects.filter(policy=policy)}
    guides = []
    for position, doctor in enumerate(spec.doctors):
        row = rows.get(position)
        if row is None or row.status != Doctor.Status.DONE or row.spec != doctor.training_record():
            raise StepError(f"policy {policy.name}: doctor {position} is not trained with its current params; "
                            "press Prepare to train it")
        if not Path(row.path, "doctor.json").is_file():
            raise StepError(f"policy {policy.name}: the trained doctor {position} is missing from {row.path}")
        guides.append((row.path, doctor.beta))
    return spec.alpha, guides
