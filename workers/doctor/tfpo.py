"""TFPO: token-level flow-guided preference optimisation of a doctor (theory.md §6.2).

Flow parametrisation (the public sources leave it open; this is the choice made here)
------------------------------------------------------------------------------------
For a prompt x and a response y = y_1..y_T, with s_t = (x, y_≤t) and token rewards r_t from
the patient (``workers.doctor.rewards``; + for the preferred response, − for the other):

    log F(s_t) = λ·C_t + A_t + V_φ(s_t),     C_t = Σ_{i≤t} r_i   (C_0 = 0)

where A_t = Σ_{i≤t} log π_patient(y_i | s_{i−1}) is the frozen patient's cumulative
log-likelihood (``anchor="reward+reference"``, the default) or 0 (``anchor="reward"``), λ is
``reward_scale`` and V_φ the doctor's value head. Subtrajectory balance asks, for every pair of
prefixes 0 ≤ m < n ≤ T,

    log F(s_n) − log F(s_m) = Σ_{t=m+1..n} log π_doctor(y_t | s_{t−1}),

so with d_t = log π_doctor(y_t|s_{t−1}) − λ r_t − (A_t − A_{t−1}) − (V_φ(s_t) − V_φ(s_{t−1}))
and D_n = Σ_{t≤n} d_t the residual of (m, n) is D_n − D_m, and

    L_SubTB = mean over sequences of  mean over the T(T+1)/2 pairs m < n of (D_n − D_m)²,

computed in O(T) as  (T+1)·Σ_j (D_j − D̄)²  / (T(T+1)/2).

Why the reference term: a doctor's log-probabilities fall by about 2 nats per token on sampled
text, so without it V_φ must first learn that drift before the rewards matter. With it, the
untrained doctor (LoRA at zero, V = 0) has residuals of exactly −λ·r_t, and at zero loss the
doctor's next-token distribution is the patient's tilted by exp(λ·r_t + ΔV): a token-level,
KL-anchored improvement of the patient, which is what guided decoding adds on top of it.

Value discrimination (``value_hinge``), the method's form ``"token"`` (the default): per token,
on the prefix length both responses have, the state reached by the chosen response's token
should be worth γ more than the state reached by the rejected one's,

    L_V = mean_{t ∈ P} max(0, γ − (V_φ(s_t^w) − V_φ(s_t^l))),
    P = {k+1, …, min(T_w, T_l)},  k = the number of leading tokens y_w and y_l share,

where s_t^w = (x, y_w,≤t). The first k positions are left out: there the two states are the
same text, so V_φ(s_t^w) = V_φ(s_t^l) and the hinge is the constant γ with no gradient. A pair
with P empty (one response a token prefix of the other) adds no hinge. ``"sequence"`` keeps the
earlier form on the mean value along each response, V(x, y) = mean_{t=1..T} V_φ(s_t):
L_V = max(0, γ − (V(x, y_w) − V(x, y_l))).

The loss is  Σ_i w_i·(L_SubTB(y_w) + L_SubTB(y_l))/2 / Σ w  +  value_weight · Σ_i w_i·L_V / Σ w
over the step's pairs (weights from the pairs).

Training is deterministic: the model runs without dropout, step s uses the pairs drawn by
``numpy.random.default_rng([seed, s])``, and a checkpoint holds the trainable tensors and the
optimizer state, so a resumed run ends with the parameters of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from workers.doctor.losses import (
    hinge_positions,
    subtrajectory_balance_loss,
    token_value_hinge_loss,
    value_hinge_loss,
)
from workers.doctor.network import build_doctor, save_doctor
from workers.doctor.pairs import TextPair
from workers.doctor.rewards import (
    RewardConfig,
    TokenRewards,
    patient_identity,
    response_logprobs,
    score_responses,
)
from workers.generation import ModelHandle, encode_prompt, left_pad

__all__ = [
    "StepLoss",
    "TFPOConfig",
    "TrainedDoctor",
    "TrainingExample",
    "doctor_key",
    "find_trained_doctor",
    "held_out_margin",
    "hinge_positions",
    "prepare_examples",
    "subtrajectory_balance_loss",
    "train_doctor",
    "token_value_hinge_loss",
    "train_doctor_from_pairs",
    "value_hinge_loss",
]

_KEY_VERSION = "ualign-tfpo-v2"
_NOT_HASHED = ("checkpoint_every", "keep_checkpoints")


@dataclasses.dataclass(frozen=True)
class TFPOConfig:
    """Hyper-parameters of a doctor and its training (defaults in docs/llmdoctor.md).

    Attributes
    ----------
    doctor
        ``"lora"`` (adapters on a copy of the patient) or ``"model"`` (fine-tune ``doctor_ref``).
    doctor_ref
        Local folder or hub id of the doctor LM when ``doctor="model"``.
    lora_rank, lora_alpha, lora_targets
        LoRA shape; ``lora_targets=None`` adapts every linear layer (peft's ``"all-linear"``).
    anchor
        ``"reward+reference"`` or ``"reward"`` (see the module docstring).
    reward_scale
        λ, the weight of the cumulative token reward in log F.
    gamma, value_weight
        Margin γ of the value hinge and its weight in the loss.
    value_hinge
        ``"token"`` (the method's: per token on the positions both responses have, after
        their shared leading tokens) or ``"sequence"`` (on the mean value along each
        response); see the module docstring.
    learning_rate, head_learning_rate, weight_decay, max_grad_norm
        AdamW settings (one rate for the LM's trainable weights, one for the head); gradient
        norm clipping (0 disables it).
    steps, pairs_per_step
        Optimiser steps and pairs per step.
    checkpoint_every, keep_checkpoints
        Write a checkpoint every K steps; keep the last few (not part of the doctor's hash).
    seed
        Seeds the LoRA/head initialisation and the pairs drawn at each step.
    system_prompt
        System prompt of the decoding the doctor will guide (its context in training).
    """

    doctor: Literal["lora", "model"] = "lora"
    doctor_ref: str | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] | None = None
    anchor: Literal["reward+reference", "reward"] = "reward+reference"
    reward_scale: float = 1.0
    gamma: float = 0.1
    value_weight: float = 1.0
    value_hinge: Literal["token", "sequence"] = "token"
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    steps: int = 200
    pairs_per_step: int = 4
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.doctor not in ("lora", "model"):
            raise ValueError(f"doctor: expected 'lora' or 'model', got {self.doctor!r}")
        if self.doctor == "model" and not self.doctor_ref:
            raise ValueError(
                "doctor_ref: a 'model' doctor needs the folder or id of its LM"
            )
        if self.anchor not in ("reward+reference", "reward"):
            raise ValueError(
                f"anchor: expected 'reward+reference' or 'reward', got {self.anchor!r}"
            )
        if self.value_hinge not in ("token", "sequence"):
            raise ValueError(
                f"value_hinge: expected 'token' or 'sequence', got {self.value_hinge!r}"
            )
        for name in (
            "lora_rank",
            "steps",
            "pairs_per_step",
            "checkpoint_every",
            "keep_checkpoints",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in (
            "lora_alpha",
            "reward_scale",
            "learning_rate",
            "head_learning_rate",
        ):
            value = getattr(self, name)
            if not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        for name in ("gamma", "value_weight", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not (
                isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
            ):
                raise ValueError(
                    f"{name}: expected a finite number >= 0, got {value!r}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingExample:
    """One pair, tokenised, with signed token rewards and the patient's reference log-probabilities."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_rewards: np.ndarray
    rejected_rewards: np.ndarray
    chosen_reference: np.ndarray
    rejected_reference: np.ndarray
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class StepLoss:
    """Progress of one optimiser step: the total loss and its two parts, before the update.

    ``margin`` is the held-out pairs' mean chosen-minus-rejected log-likelihood margin of the
    doctor against the patient's, after the update (``train_doctor``'s ``held_out``), on the
    steps where it was measured; None elsewhere.
    """

    step: int
    steps: int
    loss: float
    subtb: float
    hinge: float
    margin: float | None = None


@dataclasses.dataclass(frozen=True)
class TrainedDoctor:
    """A doctor on disk: ``path`` loads with ``load_model`` / ``load_doctor``."""

    key: str
    path: Path
    history: tuple[StepLoss, ...]
    reused: bool
    seconds: float


# --------------------------------------------------------------------------------------------
# Hash and examples
# --------------------------------------------------------------------------------------------


def doctor_key(
    pairs: Sequence[TextPair],
    patient: ModelHandle | str,
    reward_config: RewardConfig,
    config: TFPOConfig,
) -> str:
    """sha256 (hex) naming a trained doctor: its pairs (in order), patient and hyper-parameters.

    Checkpoint cadence is left out (it does not change the result); the pairs' ``source``
    labels too. The same inputs give the same key, so a finished doctor is found again.
    """
    tfpo = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_HASHED}
    material = {
        "v": _KEY_VERSION,
        "patient": patient_identity(patient),
        "pairs": [[p.prompt, p.chosen, p.rejected, float(p.weight)] for p in pairs],
        "rewards": dataclasses.asdict(reward_config),
        "tfpo": tfpo,
    }
    return hashlib.sha256(
        json.dumps(material, sort_keys=True, ensure_ascii=True).encode()
    ).hexdigest()


def prepare_examples(
    patient: ModelHandle,
    pairs: Sequence[TextPair],
    reward_config: RewardConfig,
    config: TFPOConfig,
    *,
    cache: MutableMapping[str, TokenRewards] | None = None,
    batch_size: int = 8,
) -> list[TrainingExample]:
    """Token rewards (cached per candidate) and reference log-probabilities for each pair.

    Pairs whose chosen or rejected text has no tokens are dropped (a flow over zero tokens says
    nothing). Raises ``ValueError`` when no pair is left.
    """
    requests = [(p.prompt, text) for p in pairs for text in (p.chosen, p.rejected)]
    scored = score_responses(
        patient, requests, reward_config, cache=cache, batch_size=batch_size
    )
    contexts = {
        p.prompt: encode_prompt(patient, p.prompt, system_prompt=config.system_prompt)
        for p in pairs
    }
    kept = [
        n
        for n in range(len(pairs))
        if scored[2 * n].token_ids and scored[2 * n + 1].token_ids
    ]
    if not kept:
        raise ValueError("pairs: no pair has a non-empty chosen and rejected response")
    if config.anchor == "reward+reference":
        # One pass per distinct (prompt, response): with mode="all" a text is in many pairs.
        wanted = [
            (pairs[n].prompt, scored[2 * n + side].token_ids)
            for n in kept
            for side in (0, 1)
        ]
        distinct = list(dict.fromkeys(wanted))
        computed = response_logprobs(
            patient,
            [contexts[prompt] for prompt, _ in distinct],
            [list(ids) for _, ids in distinct],
            batch_size=batch_size,
        )
        by_row = dict(zip(distinct, computed, strict=True))
        reference = [by_row[w] for w in wanted]
    else:
        reference = [
            np.zeros(len(scored[2 * n + side].token_ids))
            for n in kept
            for side in (0, 1)
        ]
    return [
        TrainingExample(
            prompt_ids=tuple(contexts[pairs[n].prompt]),
            chosen_ids=scored[2 * n].token_ids,
            rejected_ids=scored[2 * n + 1].token_ids,
            chosen_rewards=scored[2 * n].signed(1),
            rejected_rewards=scored[2 * n + 1].signed(-1),
            chosen_reference=reference[2 * j],
            rejected_reference=reference[2 * j + 1],
            weight=float(pairs[n].weight),
        )
        for j, n in enumerate(kept)
    ]


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def _aligned_values(values: Any, lengths: Sequence[int], width: int) -> Any:
    """V along each row's response, left-aligned by token position: (rows, max length)."""
    torch = _torch()
    longest = max(lengths)
    index = torch.zeros((len(lengths), longest), dtype=torch.long)
    for j, n in enumerate(lengths):
        index[j, :n] = torch.arange(width - n, width)
    return values.gather(1, index.to(values.device))


def _hinge_part(
    values: Any,
    response: Any,
    examples: Sequence[TrainingExample],
    lengths: Sequence[int],
    config: TFPOConfig,
) -> Any:
    """The value hinge of each pair of the batch (rows 2i chosen, 2i+1 rejected), shape (B,)."""
    torch = _torch()
    if config.value_hinge == "sequence":
        mean_value = (values * response).sum(dim=1) / response.sum(dim=1)
        return value_hinge_loss(mean_value[0::2], mean_value[1::2], gamma=config.gamma)
    aligned = _aligned_values(values, lengths, values.shape[1])
    counted = torch.zeros((len(examples), aligned.shape[1]), device=values.device)
    for i, ex in enumerate(examples):
        k, stop = hinge_positions(ex.chosen_ids, ex.rejected_ids)
        counted[i, k:stop] = 1.0
    return token_value_hinge_loss(
        aligned[0::2], aligned[1::2], counted, gamma=config.gamma
    )


def _torch() -> Any:
    import torch  # in-function import: keeps torch out of the web process

    return torch


def _place(batch_rows: list[np.ndarray], width: int, device: str) -> Any:
    """Right-align 1-D arrays into a (B, width) float32 tensor of zeros."""
    torch = _torch()
    out = torch.zeros((len(batch_rows), width), dtype=torch.float32)
    for i, row in enumerate(batch_rows):
        if len(row):
            out[i, width - len(row) :] = torch.as_tensor(
                np.asarray(row), dtype=torch.float32
            )
    return out.to(device)


def _batch_loss(
    net: Any,
    examples: Sequence[TrainingExample],
    config: TFPOConfig,
    pad_id: int,
    device: str,
) -> tuple[Any, Any, Any]:
    """Total loss of one step and its SubTB and hinge parts (tensors)."""
    torch = _torch()
    rows, rewards, reference, lengths = [], [], [], []
    for ex in examples:
        for ids, r, ref in (
            (ex.chosen_ids, ex.chosen_rewards, ex.chosen_reference),
            (ex.rejected_ids, ex.rejected_rewards, ex.rejected_reference),
        ):
            rows.append([*ex.prompt_ids, *ids])
            rewards.append(r)
            reference.append(ref)
            lengths.append(len(ids))
    ids, mask, positions = left_pad(rows, pad_id=pad_id, device=device)
    width = ids.shape[1]
    logits, values = net.forward(ids, mask, positions)
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[
        ..., 0
    ]
    token_logp = torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)
    response = _place([np.ones(n) for n in lengths], width, device)
    subtb = subtrajectory_balance_loss(
        token_logp * response,
        _place(rewards, width, device),
        _place(reference, width, device),
        values,
        response,
        reward_scale=config.reward_scale,
    )
    weights = torch.tensor(
        [ex.weight for ex in examples], dtype=torch.float32, device=device
    )
    weights = weights / weights.sum()
    subtb_part = (weights * (subtb[0::2] + subtb[1::2]) / 2).sum()
    hinge_part = (
        weights * _hinge_part(values, response, examples, lengths, config)
    ).sum()
    return subtb_part + config.value_weight * hinge_part, subtb_part, hinge_part


def _sequence_logp(
    net: Any, rows: list[list[int]], lengths: list[int], pad_id: int, device: str
) -> Any:
    """Σ log π_doctor over each row's last ``lengths[j]`` tokens (its response), shape (rows,)."""
    torch = _torch()
    ids, mask, positions = left_pad(rows, pad_id=pad_id, device=device)
    logits, _ = net.forward(ids, mask, positions)
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[
        ..., 0
    ]
    response = _place([np.ones(n) for n in lengths], ids.shape[1], device)[:, 1:]
    return (logp * response).sum(dim=1)


def held_out_margin(
    net: Any,
    examples: Sequence[TrainingExample],
    *,
    pad_id: int,
    device: str,
    batch_size: int = 8,
) -> float:
    """Mean over pairs of the doctor's chosen-minus-rejected log-likelihood margin, less the patient's.

    ``[log π_d(y_w|x) − log π_d(y_l|x)] − [log π_p(y_w|x) − log π_p(y_l|x)]``, the patient's
    from the examples' reference log-probabilities (so it needs ``anchor="reward+reference"``
    examples; with ``"reward"`` they are 0 and this is the doctor's own margin). 0 for an
    untrained LoRA doctor; it grows when training moves the doctor towards the chosen texts.
    """
    torch = _torch()
    margins = []
    with torch.no_grad():
        for first in range(0, len(examples), batch_size):
            chunk = examples[first : first + batch_size]
            rows = [
                [*ex.prompt_ids, *ids]
                for ex in chunk
                for ids in (ex.chosen_ids, ex.rejected_ids)
            ]
            lengths = [
                len(ids) for ex in chunk for ids in (ex.chosen_ids, ex.rejected_ids)
            ]
            logp = (
                _sequence_logp(net, rows, lengths, pad_id, device)
                .double()
                .cpu()
                .numpy()
            )
            for i, ex in enumerate(chunk):
                reference = float(
                    np.sum(ex.chosen_reference) - np.sum(ex.rejected_reference)
                )
                margins.append(logp[2 * i] - logp[2 * i + 1] - reference)
    return float(np.mean(margins))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _atomic_dir(final: Path, write: Callable[[Path], None]) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write(tmp / "x")
        (tmp / "x").rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_checkpoint(
    run_dir: Path,
    net: Any,
    optimizer: Any,
    step: int,
    key: str,
    history: Sequence[StepLoss],
    keep: int,
) -> None:
    import torch  # in-function import: keeps torch out of the web process
    from safetensors.torch import save_file

    def write(folder: Path) -> None:
        folder.mkdir()
        save_file(
            {n: t.cpu() for n, t in net.trainable_state().items()},
            str(folder / "trainable.safetensors"),
        )
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        state = {
            "key": key,
            "step": step,
            "history": [dataclasses.asdict(h) for h in history],
        }
        (folder / "state.json").write_text(json.dumps(state))

    checkpoints = run_dir / "checkpoints"
    _atomic_dir(checkpoints / f"step-{step:08d}", write)
    for old in sorted(checkpoints.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _latest_checkpoint(run_dir: Path) -> Path | None:
    done = sorted(
        p
        for p in (run_dir / "checkpoints").glob("step-*")
        if (p / "state.json").is_file()
    )
    return done[-1] if done else None


def _resume(
    run_dir: Path, net: Any, optimizer: Any, key: str, device: str
) -> tuple[int, list[StepLoss]]:
    import torch  # in-function import: keeps torch out of the web process
    from safetensors.torch import load_file

    latest = _latest_checkpoint(run_dir)
    if latest is None:
        return 0, []
    state = json.loads((latest / "state.json").read_text())
    if state["key"] != key:
        raise ValueError(
            f"run_dir: {str(run_dir)!r} holds checkpoints of another doctor ({state['key'][:16]})"
        )
    net.load_trainable_state(
        load_file(str(latest / "trainable.safetensors"), device=device)
    )
    optimizer.load_state_dict(
        torch.load(latest / "optimizer.pt", map_location=device, weights_only=True)
    )
    return int(state["step"]), [StepLoss(**h) for h in state["history"]]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def find_trained_doctor(run_dir: str | Path, key: str) -> TrainedDoctor | None:
    """The finished doctor in ``run_dir`` when it was trained with ``key``, else None."""
    meta_path = Path(run_dir) / "doctor" / "doctor.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        return None
    history = tuple(StepLoss(**h) for h in meta.get("history", []))
    return TrainedDoctor(
        key=key, path=meta_path.parent, history=history, reused=True, seconds=0.0
    )


def _pad_id(handle: ModelHandle) -> int:
    tokenizer = handle.tokenizer
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def _optimizer(net: Any, config: TFPOConfig) -> Any:
    torch = _torch()
    lm_params = [p for p in net.lm.parameters() if p.requires_grad]
    groups = [
        {"params": lm_params, "lr": config.learning_rate},
        {"params": list(net.head.parameters()), "lr": config.head_learning_rate},
    ]
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def _run_steps(
    net: Any,
    optimizer: Any,
    examples: Sequence[TrainingExample],
    config: TFPOConfig,
    step: int,
    history: list[StepLoss],
    *,
    run_dir: Path,
    key: str,
    pad_id: int,
    device: str,
    progress: Callable[[StepLoss], None] | None,
    held_out: Sequence[TrainingExample] = (),
    monitor_every: int = 10,
) -> None:
    """Optimiser steps ``step + 1 .. config.steps``: loss, update, history, checkpoint, progress.

    With ``held_out`` examples, their margin (:func:`held_out_margin`) is measured after steps
    1, every ``monitor_every``-th and the last.
    """
    torch = _torch()
    while step < config.steps:
        draw = np.random.default_rng([config.seed, step])
        size = min(config.pairs_per_step, len(examples))
        chosen = sorted(draw.choice(len(examples), size=size, replace=False))
        loss, subtb, hinge = _batch_loss(
            net, [examples[i] for i in chosen], config, pad_id, device
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
        optimizer.step()
        step += 1
        margin = None
        if held_out and (
            step == 1 or step % monitor_every == 0 or step == config.steps
        ):
            margin = held_out_margin(net, held_out, pad_id=pad_id, device=device)
        history.append(
            StepLoss(
                step, config.steps, loss.item(), subtb.item(), hinge.item(), margin
            )
        )
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_checkpoint(
                run_dir, net, optimizer, step, key, history, config.keep_checkpoints
            )
        if progress is not None:
            progress(history[-1])


def train_doctor(
    patient: ModelHandle,
    examples: Sequence[TrainingExample],
    config: TFPOConfig,
    *,
    run_dir: str | Path,
    key: str,
    progress: Callable[[StepLoss], None] | None = None,
    meta: dict[str, Any] | None = None,
    held_out: Sequence[TrainingExample] = (),
    monitor_every: int = 10,
) -> TrainedDoctor:
    """Train a doctor with TFPO, checkpointing to ``run_dir``; resume from its last checkpoint.

    ``run_dir`` holds ``checkpoints/step-NNNNNNNN/`` (every ``checkpoint_every`` steps and at
    the end) and, when done, ``doctor/`` (see ``workers.doctor.network``). A ``run_dir`` whose
    ``doctor/`` was trained with ``key`` is returned at once (``reused=True``); checkpoints of
    another key are refused. ``progress`` is called after every step (after that step's
    checkpoint is written), with the loss measured before the update; an exception it raises
    stops training, and the next call resumes from the last checkpoint. ``held_out``
    examples (pairs never trained on) get their margin measured every ``monitor_every`` steps
    into the history (``StepLoss.margin``); they do not enter the doctor's key.
    """
    run_dir = Path(run_dir)
    done = find_trained_doctor(run_dir, key)
    if done is not None:
        return done
    if (run_dir / "doctor").exists():
        raise ValueError(
            f"run_dir: {str(run_dir)!r} already holds a doctor trained with other inputs"
        )
    if not examples:
        raise ValueError("examples: expected at least one training example")
    started = time.perf_counter()
    net = build_doctor(patient, config)
    optimizer = _optimizer(net, config)
    step, history = _resume(run_dir, net, optimizer, key, patient.device)
    _run_steps(net, optimizer, examples, config, step, history, run_dir=run_dir, key=key,
               pad_id=_pad_id(patient), device=patient.device, progress=progress, held_out=held_out,
               monitor_every=monitor_every)  # fmt: skip
    record = {
        "key": key,
        "patient": patient_identity(patient),
        "tfpo": dataclasses.asdict(config),
        "examples": len(examples),
        "history": [dataclasses.asdict(h) for h in history],
        **(meta or {}),
    }
    _atomic_dir(
        run_dir / "doctor", lambda folder: save_doctor(net, patient, folder, record)
    )
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return TrainedDoctor(
        key=key,
        path=run_dir / "doctor",
        history=tuple(history),
        reused=False,
        seconds=time.perf_counter() - started,
    )


def train_doctor_from_pairs(
    patient: ModelHandle,
    pairs: Sequence[TextPair],
    *,
    root: str | Path,
    reward_config: RewardConfig | None = None,
    config: TFPOConfig | None = None,
    cache: MutableMapping[str, TokenRewards] | None = None,
    progress: Callable[[StepLoss], None] | None = None,
    batch_size: int = 8,
) -> TrainedDoctor:
    """Pairs in, doctor out: hash, reuse a finished doctor, else rewards → examples → training.

    The run lives in ``root / key[:16]`` (``key`` from :func:`doctor_key`), so a re-run with
    the same pairs, patient and hyper-parameters finds the finished doctor (or its checkpoints).
    """
    reward_config = reward_config or RewardConfig()
    config = config or TFPOConfig()
    key = doctor_key(pairs, patient, reward_config, config)
    run_dir = Path(root) / key[:16]
    done = find_trained_doctor(run_dir, key)
    if done is not None:
        return done
    examples = prepare_examples(
        patient, pairs, reward_config, config, cache=cache, batch_size=batch_size
    )
    meta = {"rewards": dataclasses.asdict(reward_config), "pairs": len(pairs)}
    return train_doctor(
        patient,
        examples,
        config,
        run_dir=run_dir,
        key=key,
        progress=progress,
        meta=meta,
    )
