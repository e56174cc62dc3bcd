"""What the model reads: the prompt through the chat template, padded token rows, and seeds.

Every candidate ``(prompt, index)`` of a pool owns a random stream seeded by
:func:`sample_seed`; see the package docstring for what that makes reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from .loading import ModelHandle, _torch

SEEDING_SCHEME = "ualign-sample-v1: sha256('ualign-sample-v1' | seed | sha256(prompt) | index)[:8] & (2**63 - 1)"


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def format_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool
) -> str:
    """Render ``messages`` with the tokenizer's chat template, as text."""
    text: str = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return text


def encode_prompt(
    handle: ModelHandle, prompt: str, *, system_prompt: str | None = None
) -> list[int]:
    """Token ids the model sees for ``prompt``.

    With a chat template: ``[system?, user]`` messages rendered with ``add_generation_prompt=True``
    and tokenised without adding special tokens again (the template writes them). Without one:
    the raw text (``system_prompt + "\\n\\n" + prompt`` when a system prompt is given), tokenised
    with the tokenizer's default special tokens.
    """
    tokenizer = handle.tokenizer
    if has_chat_template(tokenizer):
        messages = (
            [{"role": "system", "content": system_prompt}]
            if system_prompt is not None
            else []
        )
        messages.append({"role": "user", "content": prompt})
        text = format_chat(tokenizer, messages, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = prompt if system_prompt is None else f"{system_prompt}\n\n{prompt}"
        ids = tokenizer(text)["input_ids"]
    if not ids and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    if not ids:
        raise ValueError(
            "prompt: encodes to no tokens and the tokenizer has no BOS token"
        )
    return list(ids)


def sample_seed(seed: int, prompt: str, index: int) -> int:
    """Seed of candidate ``index`` of ``prompt``'s pool, in ``[0, 2**63)``.

    ``sha256("ualign-sample-v1" | seed | sha256(prompt) | index)``, first 8 bytes. The system
    prompt and the model are deliberately not part of it: two policies sampled with the same
    ``seed`` use common random numbers.
    """
    prompt_hash = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    material = (
        f"ualign-sample-v1\x00{int(seed)}\x00{prompt_hash}\x00{int(index)}".encode()
    )
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") & (
        (1 << 63) - 1
    )


def left_pad(
    rows: Sequence[Sequence[int]], *, pad_id: int, device: str
) -> tuple[Any, Any, Any]:
    """Left-pad token-id rows into ``(input_ids, attention_mask, position_ids)``, each (B, L) long.

    Positions count from each row's first real token (padding gets position 0 and is masked),
    so a padded row sees the same positions as it would alone; the last column is every row's
    last real token.
    """
    torch = _torch()
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("rows: expected non-empty token-id rows")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)
