"""Adaptive allocation in the product (issue #22): the periodic job that writes item priorities.

Per live study with `Study.adaptive_allocation` on, every UALIGN_ALLOCATION_SECONDS (celery beat,
`studies.tasks.allocate_judgments`): read the judgments, form each cell's units (its prompts' mean
credits, as the results page's anytime-valid interval does: `workers.stats.sequential`), run the pure
rule `workers.stats.allocation.allocate` (the one the bench validates), write each cell's priority on
its items in one bulk UPDATE (`ComparisonItem.priority`; the claim hands out the highest first, so the
pick stays one constant-cost claim), and record the run (`AllocationRun`). `replay` recomputes a
recorded run from the judgments that existed then and says whether it decides the same.

Cells are (policy, k, opponent, m). The opponents of one (policy, k, m) form a group: the rule's
successive elimination / LUCB finds the one the policy does worst against (the annotators'
adversary, docs/theory.md §12). What each cell's question is comes from `cells_of_interest`: the
study's pre-registered question (`StudyQuestion`) names the cells it reads and their thresholds; with
none (or a precision question), every cell is to be known to ± a half-width.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from studies.estimate import results
from studies.judgment import sql
from studies.models import (
    AllocationRun,
    ComparisonItem,
    Judgment,
    Study,
    StudyQuestion,
)
from workers.policies.credit import decided_item_weight, judgment_credit, tie_credit
from workers.stats import allocation as rule
from workers.stats import sequential

# A run counts the judgments created this long before it starts: a pick commits within well under
# that of its INSERT, so none created by then is still uncommitted (and a replay finds the same ones).
SETTLE = timedelta(seconds=10)
CONFIDENCE = 0.95
SD = 0.5  # ρ's planned sd: the largest a [0, 1] prompt mean can have, as the results page's CS


class CellKey(NamedTuple):
    policy: str
    k: int
    opponent: str
    m: int


@dataclass(frozen=True)
class Question:
    """What a cell's judgments are for: "is f ≥ threshold?" (answered above, below, or within ±margin)."""

    threshold: float | None = None
    margin: float = 0.0


def cells_of_interest(study: Study) -> Mapping[CellKey, Question] | None:
    """The cells the study's pre-registered question reads, each with its threshold; None: every cell,
    each to be known to ± a half-width (`_half_width`).

    Threshold: the policy's headline cell at k with the question's x and margin; difference: both
    policies' headline cells at k, with no threshold of their own, so the two keep one priority and
    their prompts stay paired until the question is answered. A study whose headline is the annotators'
    adversary reads every screened opponent of those (policy, k), grouped, so the rule's elimination
    looks for the worst. A precision question, an answered one or none: None."""
    question = StudyQuestion.objects.filter(study=study).select_related("policy", "other_policy").first()
    if question is None or question.kind == StudyQuestion.Kind.PRECISION or question.answer:
        return None
    threshold = question.kind == StudyQuestion.Kind.THRESHOLD
    k = int(question.k or 0)  # validated: one of the study's k values (`StudyQuestion.problems`)
    names = [p.name for p in (question.policy, question.other_policy) if p is not None][: 1 if threshold else 2]
    asked = Question(float(question.threshold or 0.0), float(question.margin or 0.0)) if threshold else Question()
    opponents = [ComparisonItem.ADVERSARY]
    if study.adversary == Study.Adversary.ANNOTATORS:
        opponents = list(ComparisonItem.objects.filter(study=study, is_attention_check=False, k=k,
                                                       policy__name__in=names, m=study.opponent_outputs)
                         .values_list("opponent_label", flat=True).distinct())  # fmt: skip
    return {CellKey(name, k, opponent, study.opponent_outputs): asked
            for name in names for opponent in opponents}  # fmt: skip


def _half_width(study: Study) -> float:
    """When a cell is known well enough without a question: a precision question's h, else the study's."""
    question = StudyQuestion.objects.filter(study=study, kind=StudyQuestion.Kind.PRECISION).first()
    return float(question.half_width) if question and question.half_width else float(study.allocation_half_width)


@dataclass
class _Cell:
    policy_id: int
    rows: dict[int, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))  # prompt → (credit, w)
    judged: int = 0
    to_judge: int = 0
    decided: list[int] = field(default_factory=list)  # prompts of the items decided by construction


@dataclass(frozen=True)
class Seen:
    """The judgments a run read: up to `as_of`, less those of `left_out` participants."""

    as_of: datetime
    left_out: tuple[int, ...]
    ids: tuple[int, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(",".join(map(str, self.ids)).encode()).hexdigest()


def left_out_participants(study: Study) -> tuple[int, ...]:
    """Participants whose judgments the results leave out by default (rejected in review, or ended):
    the results' own list (`results.flagged_participants`), so the two cannot disagree."""
    return tuple(pk for pk, _ in results.flagged_participants(study))


def _cells(study: Study, as_of: datetime, left_out: tuple[int, ...], tie: bool) -> tuple[Seen, dict[CellKey, _Cell]]:
    """What a run reads: every regular cell of the study with its judged rows (credit, weight 1) and
    decided items, from the judgments created up to `as_of` less those of `left_out` participants."""
    cells: dict[CellKey, _Cell] = {}
    items = ComparisonItem.objects.filter(study=study, is_attention_check=False).order_by("id")
    for policy_id, policy, k, opponent, m, prompt, needs in items.values_list(
        "policy_id", "policy__name", "k", "opponent_label", "m", "prompt_id", "needs_judgment"
    ):
        cell = cells.setdefault(CellKey(policy, k, opponent, m), _Cell(policy_id))
        if needs:
            cell.to_judge += 1
        else:
            cell.decided.append(prompt)
    judgments = (
        Judgment.objects.filter(assignment__item__study=study, assignment__item__is_attention_check=False,
                                created_at__lte=as_of)
        .exclude(assignment__participant_id__in=left_out).order_by("id")
    )  # fmt: skip
    ids = []
    for pk, credit, cant_decide, policy, k, opponent, m, prompt in judgments.values_list(
        "id", "credit", "cant_decide", "assignment__item__policy__name", "assignment__item__k",
        "assignment__item__opponent_label", "assignment__item__m", "assignment__item__prompt_id",
    ):  # fmt: skip
        ids.append(pk)
        # The pick stored the chosen text's credit; "can't decide" is the credit rule's to count or not.
        value = judgment_credit(None, None, k=k, m=m, cant_decide_as_tie=tie) if cant_decide else credit
        if value is not None:
            cell = cells[CellKey(policy, k, opponent, m)]
            cell.rows[prompt].append((float(value), 1.0))
            cell.judged += 1
    return Seen(as_of, left_out, tuple(ids)), cells


def _units(key: CellKey, cell: _Cell, per_item: int) -> np.ndarray:
    """The cell's prompt means, its decided items weighted as on the results page (none before a
    judgment: `workers.policies.credit.decided_item_weight`)."""
    rows = {prompt: list(values) for prompt, values in cell.rows.items()}
    if cell.judged or not cell.to_judge:
        weight = decided_item_weight(cell.judged, cell.to_judge, per_item)
        for prompt in cell.decided:
            rows.setdefault(prompt, []).append((tie_credit(key.k, key.m), weight))
    flat = [(prompt, c, w) for prompt, values in rows.items() for c, w in values]
    if not flat:
        return np.array([])
    prompts, credits, weights = zip(*flat, strict=True)
    return sequential.prompt_means(credits, prompts, weights)[1]


def parameters_of(study: Study) -> dict[str, Any]:
    """The rule's inputs taken from the study now (recorded with the run, and replayed from there)."""
    questions = cells_of_interest(study)
    return {
        "confidence": CONFIDENCE,
        # A question says when its cells are done; without one, a cell is done once this narrow.
        "half_width": _half_width(study) if questions is None else None,
        "planned_units": max(study.prompts.count(), 1),
        "sd": SD,
        "cant_decide_as_tie": study.cant_decide_analysis == Study.CantDecide.TIE,
        "annotations_per_item": int(study.annotations_per_item),
        "questions": None
        if questions is None
        else [[*key, q.threshold, q.margin] for key, q in sorted(questions.items())],
    }


def decide(study: Study, as_of: datetime, left_out: tuple[int, ...],
           parameters: Mapping[str, Any]) -> tuple[Seen, list[dict[str, Any]]]:
    """What the rule saw, and per cell (sorted by key) its anytime-valid interval, state and priority."""
    seen, cells = _cells(study, as_of, left_out, bool(parameters["cant_decide_as_tie"]))
    keys = sorted(cells)
    if not keys:
        return seen, []
    questions = parameters["questions"]
    asked = None if questions is None else {CellKey(*q[:4]): Question(q[4], q[5]) for q in questions}
    units = [_units(key, cells[key], int(parameters["annotations_per_item"])) for key in keys]
    groups: dict[tuple[str, int, int], int] = {}
    alpha = 1.0 - float(parameters["confidence"])
    result = rule.allocate(
        rule.CellStats.of(units),
        alpha=alpha,
        rho=sequential.tuned_rho(int(parameters["planned_units"]), alpha=alpha, sd=float(parameters["sd"])),
        half_width=None if parameters["half_width"] is None else float(parameters["half_width"]),
        threshold=[_threshold(asked, key) for key in keys],
        margin=[asked[key].margin if asked and key in asked else 0.0 for key in keys],
        groups=[groups.setdefault((key.policy, key.k, key.m), len(groups)) for key in keys],
        of_interest=None if asked is None else [key in asked for key in keys],
    )  # fmt: skip
    return seen, [
        {
            "policy": key.policy, "k": key.k, "opponent": key.opponent, "m": key.m, "policy_id": cells[key].policy_id,
            "n_prompts": len(units[i]), "estimate": _num(result.estimate[i]), "radius": _num(result.radius[i]),
            "low": _num(result.low[i]), "high": _num(result.high[i]),
            "state": rule.STATE_NAMES[int(result.state[i])], "priority": int(result.priority[i]),
        }  # fmt: skip
        for i, key in enumerate(keys)
    ]


def _threshold(asked: Mapping[CellKey, Question] | None, key: CellKey) -> float:
    """The cell's threshold, NaN when its question has none (or it is not asked)."""
    question = None if asked is None else asked.get(key)
    return math.nan if question is None or question.threshold is None else float(question.threshold)


def _num(value: float) -> float | None:
    """A float for JSON: None for an infinite radius (a cell without a unit)."""
    return round(float(value), 12) if math.isfinite(value) else None


def _write_priorities(study: Study, cells: list[dict[str, Any]]) -> int:
    """Each cell's priority on its items that need judging, in one statement (rows locked in primary-key
    order, as a waiting claim and a release lock them); only the rows whose priority changes."""
    if not cells:
        return 0
    if connection.vendor != "postgresql":  # SQLite (the demo): one ORM update per cell
        return sum(
            ComparisonItem.objects.filter(study=study, is_attention_check=False, policy_id=c["policy_id"], k=c["k"],
                                          opponent_label=c["opponent"], m=c["m"]).exclude(priority=c["priority"])
            .update(priority=c["priority"])
            for c in cells
        )  # fmt: skip
    table = sql.quote(ComparisonItem._meta.db_table)
    values = ", ".join(["(%s::bigint, %s::int, %s::text, %s::int, %s::smallint)"] * len(cells))
    params: list[Any] = [v for c in cells for v in (c["policy_id"], c["k"], c["opponent"], c["m"], c["priority"])]
    query = (
        f"WITH v(policy_id, k, opponent, m, priority) AS (VALUES {values}),"
        f" todo AS (SELECT i.id, v.priority FROM {table} i JOIN v ON i.policy_id = v.policy_id AND i.k = v.k"
        " AND i.opponent_label = v.opponent AND i.m = v.m WHERE i.study_id = %s AND NOT i.is_attention_check"
        " AND i.needs_judgment AND i.priority <> v.priority ORDER BY i.id FOR NO KEY UPDATE OF i)"
        f" UPDATE {table} SET priority = todo.priority FROM todo WHERE {table}.id = todo.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [*params, study.pk])
        return max(cursor.rowcount, 0)


def allocate_study(study: Study, *, now: datetime | None = None) -> AllocationRun:
    """Decide and write one study's priorities, and record the run (one transaction)."""
    now = now or timezone.now()
    parameters = parameters_of(study)
    seen, cells = decide(study, now - SETTLE, left_out_participants(study), parameters)
    with transaction.atomic():
        updated = _write_priorities(study, cells)
        return AllocationRun.objects.create(
            study=study, created_at=now, as_of=seen.as_of, rule_version=rule.RULE_VERSION,
            judgments_seen=len(seen.ids), last_judgment_id=seen.ids[-1] if seen.ids else None,
            judgments_digest=seen.digest, left_out_participants=list(seen.left_out), parameters=parameters,
            cells=cells, items_updated=updated,
        )  # fmt: skip


@dataclass(frozen=True)
class Replay:
    """A recorded run recomputed: `matches` when the same judgments give the same decisions."""

    run_id: int
    same_judgments: bool
    same_rule: bool
    differences: tuple[str, ...]
    cells: list[dict[str, Any]]

    @property
    def matches(self) -> bool:
        return self.same_judgments and self.same_rule and not self.differences


def replay(run: AllocationRun, *, tolerance: float = 1e-9) -> Replay:
    """Recompute `run` from the judgments created up to its `as_of` (less its left-out participants)
    with its recorded parameters, and compare judgment set, intervals, states and priorities."""
    seen, cells = decide(run.study, run.as_of, tuple(run.left_out_participants), run.parameters)
    same = len(seen.ids) == run.judgments_seen and seen.digest == run.judgments_digest
    differences = []
    if len(cells) != len(run.cells):
        differences.append(f"{len(cells)} cells now, {len(run.cells)} recorded")
    for new, old in zip(cells, run.cells, strict=False):
        for name, value in new.items():
            recorded = old.get(name)
            if isinstance(value, float) and isinstance(recorded, float):
                if abs(value - recorded) > tolerance:
                    differences.append(f"{old['policy']} k={old['k']} vs {old['opponent']}: {name} {value} ≠ {recorded}")
            elif value != recorded:
                differences.append(f"{old.get('policy')} k={old.get('k')} vs {old.get('opponent')}: {name} {value!r} ≠ {recorded!r}")
    return Replay(run.pk, same, run.rule_version == rule.RULE_VERSION, tuple(differences), cells)


def allocated_studies() -> list[Study]:
    return list(Study.objects.filter(status=Study.Status.LIVE, adaptive_allocation=True).order_by("pk"))


def reset_priorities(study: Study) -> int:
    """Give every item of a study whose allocation was turned off priority 0 again (none left
    steering the claim); a range of the claim's index, so cheap when there is nothing to reset."""
    return (
        ComparisonItem.objects.filter(study=study, needs_judgment=True, is_attention_check=False, priority__gt=0)
        .update(priority=0)
    )  # fmt: skip


def studies_to_reset() -> list[Study]:
    return list(Study.objects.filter(status=Study.Status.LIVE, adaptive_allocation=False).order_by("pk"))
