"""The doctor's network: a causal LM sharing the patient's tokenizer, plus a scalar value head.

Two kinds (``TFPOConfig.doctor``):

- ``"lora"``: LoRA adapters (``peft``) on a copy of the patient. The adapters start at zero, so
  the untrained doctor *is* the patient; only the adapters and the head are trained.
- ``"model"``: a separate small causal LM (a local ``save_pretrained`` folder or hub id given
  as ``doctor_ref``), fully fine-tuned. Its tokenizer must have the patient's vocabulary,
  because guided decoding adds log-probabilities token by token.

The value head is ``Linear(hidden_size, 1)`` on the last hidden state, initialised to zero;
``V(s_t)`` is read at the position of the last token of the prefix ``s_t``.

A trained doctor is saved as a plain ``save_pretrained`` folder (LoRA merged into the weights),
so ``workers.generation.load_model(folder)`` loads it like any local model, with
``value_head.safetensors`` (the head), ``doctor.json`` (hash, hyper-parameters, losses) and,
for LoRA, the unmerged adapter in ``adapter/``. torch, transformers and peft are imported inside
the functions.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

from workers.generation import ModelHandle, load_model

__all__ = ["DoctorNet", "LoadedDoctor", "build_doctor", "load_doctor", "save_doctor"]

DOCTOR_META = "doctor.json"
VALUE_HEAD = "value_head.safetensors"


@dataclasses.dataclass
class DoctorNet:
    """The trainable doctor: ``lm`` (a causal LM, maybe a ``PeftModel``) and ``head`` (Linear(H, 1))."""

    lm: Any
    head: Any
    kind: str

    def parameters(self) -> list[Any]:
        """The trainable parameters: LoRA adapters (or all LM weights) and the head."""
        return [p for p in self.lm.parameters() if p.requires_grad] + list(
            self.head.parameters()
        )

    def trainable_state(self) -> dict[str, Any]:
        """Named trainable tensors, for checkpoints (detached, contiguous copies)."""
        state = {f"lm.{n}": p for n, p in self.lm.named_parameters() if p.requires_grad}
        state |= {f"head.{n}": p for n, p in self.head.named_parameters()}
        return {n: p.detach().clone().contiguous() for n, p in state.items()}

    def load_trainable_state(self, state: dict[str, Any]) -> None:
        """Copy a :meth:`trainable_state` back into the parameters; names must match exactly."""
        import torch  # in-function import: keeps torch out of the web process

        own = {f"lm.{n}": p for n, p in self.lm.named_parameters() if p.requires_grad}
        own |= {f"head.{n}": p for n, p in self.head.named_parameters()}
        if set(own) != set(state):
            raise ValueError("checkpoint: its parameters do not match this doctor's")
        with torch.no_grad():
            for name, param in own.items():
                param.copy_(state[name])

    def forward(
        self, input_ids: Any, attention_mask: Any, position_ids: Any
    ) -> tuple[Any, Any]:
        """``(logits (B, L, V) float32, values (B, L) float32)``; ``values[:, j]`` is V of the prefix ending at j."""
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1]
        return out.logits.float(), self.head(hidden.float()).squeeze(-1)


def _same_vocabulary(patient: ModelHandle, tokenizer: Any, ref: str) -> None:
    if tokenizer.get_vocab() != patient.tokenizer.get_vocab():
        raise ValueError(
            f"doctor_ref: the tokenizer of {ref!r} does not share the vocabulary of {patient.ref!r}; "
            "guided decoding adds log-probabilities token by token, so it needs the same tokenizer"
        )


def build_doctor(patient: ModelHandle, config: Any) -> DoctorNet:
    """A fresh doctor for ``patient`` from a ``TFPOConfig`` (seeded by ``config.seed``)."""
    import torch  # in-function import: keeps torch out of the web process
    from transformers import AutoModelForCausalLM, AutoTokenizer  # likewise

    torch.manual_seed(config.seed)
    if config.doctor == "lora":
        from peft import LoraConfig, get_peft_model  # likewise

        targets = list(config.lora_targets) if config.lora_targets else "all-linear"
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.0,
            bias="none",
            target_modules=targets,
        )
        lm = get_peft_model(copy.deepcopy(patient.model), lora)
    else:
        tokenizer = AutoTokenizer.from_pretrained(config.doctor_ref)
        _same_vocabulary(patient, tokenizer, config.doctor_ref)
        lm = AutoModelForCausalLM.from_pretrained(
            config.doctor_ref, dtype=torch.float32
        )
        lm.requires_grad_(True)
    lm.to(patient.device)
    lm.eval()  # no dropout: a step is a deterministic function of the parameters and the batch
    head = torch.nn.Linear(int(lm.config.hidden_size), 1).to(patient.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return DoctorNet(lm=lm, head=head, kind=config.doctor)


def save_doctor(
    net: DoctorNet, patient: ModelHandle, folder: Path, meta: dict[str, Any]
) -> None:
    """Write the trained doctor into ``folder`` (which must not exist yet; the caller renames it)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    lm = net.lm
    if net.kind == "lora":
        lm.save_pretrained(folder / "adapter")
        lm = lm.merge_and_unload()
    lm.save_pretrained(folder)
    patient.tokenizer.save_pretrained(folder)
    state = {n: p.detach().cpu().contiguous() for n, p in net.head.state_dict().items()}
    save_file(state, str(folder / VALUE_HEAD))
    (folder / DOCTOR_META).write_text(json.dumps(meta, indent=2, sort_keys=True))


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedDoctor:
    """A trained doctor loaded for decoding: its model handle, value head and ``doctor.json``."""

    handle: ModelHandle
    head: Any
    meta: dict[str, Any]


def load_doctor(folder: str | Path, *, device: str | None = None) -> LoadedDoctor:
    """Load a doctor saved by training: ``load_model(folder)`` plus the head and metadata."""
    import torch  # in-function import: keeps torch out of the web process
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path = folder / DOCTOR_META
    if not meta_path.is_file():
        raise ValueError(
            f"folder: {str(folder)!r} holds no trained doctor ({DOCTOR_META} is missing)"
        )
    meta = json.loads(meta_path.read_text())
    handle = load_model(str(folder), device=device)
    state = load_file(str(folder / VALUE_HEAD))
    head = torch.nn.Linear(state["weight"].shape[1], 1)
    head.load_state_dict(state)
    head.to(handle.device).eval()
    return LoadedDoctor(handle=handle, head=head, meta=meta)
