"""What a study asks of its annotators, as counts: its design, its cells, its attention checks.

Shared by the item step (`studies/steps/items.py`, which makes the items) and the planner
(`planning.py`, which predicts the intervals they give), so that both count a study's attention
checks with one rule. Pure Python (no Django).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from ._validation import _is_int, _is_real

__all__ = [
    "ADVERSARY",
    "CellKey",
    "Design",
    "attention_check_count",
    "attention_check_share",
]

ADVERSARY = "adversary"


def attention_check_share(rate: float) -> float:
    """The share of the items annotators see that are attention checks, for a study's rate.

    A study's `attention_check_rate` of 1 or more means one check per regular item: half of
    what annotators see. Below 1 the rate is the share itself.
    """
    return 0.5 if rate >= 1 else rate


def attention_check_count(rate: float, n_regular: int) -> int:
    """How many attention items make them `attention_check_share(rate)` of the items annotators see.

    n_regular: the regular items that need judgment; items decided by construction are never
    shown, so they don't call for checks. The item step makes this many; the planner counts
    this many (`Design.attention_items`).
    """
    if rate <= 0 or n_regular == 0:
        return 0
    share = attention_check_share(rate)
    return max(1, round(share / (1 - share) * n_regular))


@dataclass(frozen=True)
class CellKey:
    """One (policy, k, opponent) cell of a design."""

    policy: str
    k: int
    opponent: str


@dataclass(frozen=True)
class Design:
    """What a study asks of its annotators (the fields of `studies.models.Study` that matter).

    policies: the policy names; each policy meets the adversary and every other policy, as
    `studies/steps/items.py` builds items, unless `opponents` lists the opponent labels per policy.
    replicates: items per (prompt, policy, k, opponent). attention_check_rate: share of the
    items an annotator sees that are attention checks (they cost judgments, inform no cell).
    """

    prompts: int
    k_values: tuple[int, ...]
    policies: tuple[str, ...]
    annotations_per_item: int
    items_per_participant: int
    m: int = 1
    replicates: int = 1
    attention_check_rate: float = 0.0
    opponents: Mapping[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        for name in (
            "prompts",
            "annotations_per_item",
            "items_per_participant",
            "m",
            "replicates",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        ks = tuple(self.k_values)
        if (
            not ks
            or not all(_is_int(k) and k >= 1 for k in ks)
            or len(set(ks)) != len(ks)
        ):
            raise ValueError(
                f"k_values must be distinct positive integers, got {self.k_values!r}"
            )
        names = tuple(str(p) for p in self.policies)
        if not names or len(set(names)) != len(names):
            raise ValueError(
                f"policies must be distinct names, at least one, got {self.policies!r}"
            )
        rate = self.attention_check_rate
        if not _is_real(rate) or not 0 <= rate < 1:
            raise ValueError(f"attention_check_rate must be in [0, 1), got {rate!r}")
        if self.opponents is not None:
            missing = set(names) - set(self.opponents)
            if missing or any(not tuple(v) for v in self.opponents.values()):
                raise ValueError(
                    "opponents must list at least one opponent for every policy"
                )
        object.__setattr__(self, "k_values", ks)
        object.__setattr__(self, "policies", names)

    def opponents_of(self, policy: str) -> tuple[str, ...]:
        if self.opponents is not None:
            return tuple(self.opponents[policy])
        return (ADVERSARY, *(p for p in self.policies if p != policy))

    @functools.cached_property
    def cells(self) -> tuple[CellKey, ...]:
        return tuple(
            CellKey(p, k, o)
            for p in self.policies
            for k in self.k_values
            for o in self.opponents_of(p)
        )

    @functools.cached_property
    def regular_items(self) -> int:
        return self.prompts * self.replicates * len(self.cells)

    @property
    def attention_items(self) -> int:
        """As the item step makes them (`attention_check_count`): rate/(1 − rate) of the regular items."""
        return attention_check_count(self.attention_check_rate, self.regular_items)

    @property
    def judgments(self) -> int:
        """Every judgment the study asks for, attention checks included."""
        return (self.regular_items + self.attention_items) * self.annotations_per_item

    @property
    def participants(self) -> int:
        return max(
            self.annotations_per_item,
            math.ceil(self.judgments / self.items_per_participant),
        )
