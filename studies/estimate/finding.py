"""The finding in words: per k, the difference between two policies' headlines, and one sentence.

The results page's tables give each policy's headline f̂(k) (the policy against the adversary)
with its own interval; whether one policy beats another is a different question, and two
intervals compared by eye answer it badly (they ignore that both policies were judged on the
same prompts by the same annotators). Here every pair of policies with a headline at the same
(k, m) gets f̂_A − f̂_B with its paired two-way interval (`workers.stats.difference`), and the
page states the comparison the design fixes, not one chosen after seeing the data:

- the *primary* policy is the study's first multi-player equilibrium policy (the theory's
  claim), else its first policy (in the order they were added);
- the sentence is at the largest k where the primary policy and another have a headline, and
  compares the primary policy with each other policy there.

Called by `results.compute_results` with each headline cell's arrays; imports no other module
of `studies/estimate/` (results imports it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from workers.stats.difference import DifferenceInterval, difference_interval


@dataclass(frozen=True)
class DifferenceRow:
    """f̂_A(k) − f̂_B(k) of two policies' headline cells at one (k, m), with its paired interval."""

    k: int
    m: int
    policy_a: str
    policy_b: str
    interval: DifferenceInterval


def difference_rows(
    headlines: Mapping[tuple[str, int, int], Mapping[str, Any]], policy_order: Sequence[str], confidence: float
) -> list[DifferenceRow]:
    """Every pair of policies with a headline at the same (k, m), the earlier policy (in
    `policy_order`) first; `headlines` maps (policy, k, m) to the keyword arrays of the cell
    (`credit`, `prompt_ids`, `annotator_ids`, `weights`, `decided`)."""
    rank = {name: i for i, name in enumerate(policy_order)}
    by_km: dict[tuple[int, int], list[str]] = {}
    for policy, k, m in headlines:
        by_km.setdefault((k, m), []).append(policy)
    rows = []
    for (k, m), policies in sorted(by_km.items()):
        ordered = sorted(policies, key=lambda name: (rank.get(name, len(rank)), name))
        for a, b in combinations(ordered, 2):
            cell_a, cell_b = headlines[(a, k, m)], headlines[(b, k, m)]
            interval = difference_interval(
                cell_a["credit"], cell_a["prompt_ids"], cell_a["annotator_ids"],
                cell_b["credit"], cell_b["prompt_ids"], cell_b["annotator_ids"],
                weights_a=cell_a["weights"], decided_a=cell_a["decided"],
                weights_b=cell_b["weights"], decided_b=cell_b["decided"], confidence=confidence,
            )  # fmt: skip
            rows.append(DifferenceRow(k, m, a, b, interval))
    return rows


def primary_policy(policies: Sequence[tuple[str, str]], equilibrium_kind: str) -> str | None:
    """The policy the sentence is about: the first of `equilibrium_kind`, else the first; from
    (name, kind) pairs in the study's order."""
    for name, kind in policies:
        if kind == equilibrium_kind:
            return name
    return policies[0][0] if policies else None


def _num(value: float) -> str:
    return f"{value:.2f}".replace("-", "−")


def _against(row: DifferenceRow, primary: str) -> tuple[str, float, float, float]:
    """(other policy, difference, low, high) oriented as primary − other."""
    iv = row.interval
    if row.policy_a == primary:
        return row.policy_b, iv.estimate, iv.low, iv.high
    return row.policy_a, -iv.estimate, -iv.high, -iv.low


def finding_sentence(
    differences: Sequence[DifferenceRow], headline_estimates: Mapping[tuple[str, int, int], float], primary: str | None,
    confidence: float, adversary: str = "the adversary",
) -> str:
    """One sentence: at the largest k with a comparison, how often the primary policy beats the
    adversary and by how much more (or less) than each other policy, saying which differences
    the data do not separate from 0. "" when there is nothing to compare yet. `adversary` names
    the opponent (with the annotators' adversary the differences are the model's adversary's cells)."""
    if primary is None:
        return ""
    mine = [row for row in differences if primary in (row.policy_a, row.policy_b)]
    if not mine:
        return ""
    k, m = max((row.k, row.m) for row in mine)
    at_k = [_against(row, primary) for row in mine if (row.k, row.m) == (k, m)]
    parts, unseparated = [], []
    for other, diff, low, high in at_k:
        word = "more" if diff >= 0 else "less"
        parts.append(f"{_num(abs(diff))} [{_num(low)}, {_num(high)}] {word} than {other}")
        if low <= 0.0 <= high:
            unseparated.append(other)
    m_text = "" if m == 1 else f" and m = {m}"
    sentence = (
        f"At k = {k}{m_text}, {primary} beats {adversary} {_num(headline_estimates[(primary, k, m)])} of the time, "
        + "; ".join(parts) + "."
    )
    if unseparated:
        sentence += (
            f" At {confidence:.0%} the data do not separate it from {', '.join(unseparated)}"
            " (the difference's interval contains 0)."
        )
    return sentence
