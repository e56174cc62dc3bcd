"""A study's results: judgments from the database → arrays → `workers.stats` → a summary.

The credit of a judgment is recomputed here from its provenance (theory.md §1) rather than
read from `Judgment.credit`, so the analysis follows the study's *current* "can't decide"
rule: a pick credits c_A / (c_A + c_B) of the chosen text; a "can't decide" is excluded, or
credited k / (k + m) when the study analyses it as a tie (`workers.policies.credit`, the one
home of the rule). (For picks the two agree; the stored credit is exported beside the counts,
so both can be checked.)

Win rates use the judgments on non-attention items only. Judgments are grouped per
(policy, k, opponent, m). Per (policy, k, m) the **headline** f̂(k) is the pre-registered cell,
the policy against the adversary (the worst m-output opponent under the population, fixed when
the items were built), with its two-way interval; the minimum over every tested opponent stays
beside it as a **conservative summary** with its simultaneous band (a min of noisy estimates is
biased low, and more so with more or thinner opponents). Cells with at most
`intervals.FEW_CLUSTERS` prompts or annotators take `intervals.few_clusters_interval`
(`intervals.design_interval`), and the page shows `intervals.few_clusters_warning`.

Items decided by construction (`ComparisonItem.needs_judgment` False: all k + m draws gave one
text, so the only possible pick credits k/(k+m)) are never shown to anyone, but they are part
of what the study measures: leaving them out would bias the win rate towards the items that
happen to show several texts. Each enters its cell as one row of credit k/(k+m), flagged
`decided` for `workers.stats`: in its prompt's cluster, in no annotator's. Its weight makes
every item of the cell count alike whatever the progress: with I items to judge, n analysed
judgments on them and D decided items, each decided row weighs n / I, so the decided items
hold exactly D / (I + D) of the cell's weight, their share of its items (a stratified mean:
the judged stratum estimated from its judgments, the decided one known). When the study is
complete (annotations_per_item judgments per item) that weight is annotations_per_item: the
same weight as an annotated item. A cell with no item to judge (all decided) weighs each row
annotations_per_item. Cells whose items to judge have no judgment yet are left out, as before,
and so are decided items while the chosen annotators have no judgment at all. The predicted
win rates are averaged with the same weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
from django.db.models import Count, Q, QuerySet

from studies.estimate.finding import (
    DifferenceRow,
    difference_rows,
    finding_sentence,
    primary_policy,
)
from studies.estimate.screened import (
    SCREENED_COLUMNS,
    ScreenedHeadline,
    n_screening_judgments,
    screened_rows,
    with_screened,
)
from studies.models import (
    ComparisonItem,
    ItemCandidate,
    Judgment,
    Participant,
    Policy,
    PolicyFit,
    Study,
)
from workers.policies import MOutputBound, m_output_bound
from workers.policies.credit import decided_item_weight, judgment_credit, tie_credit
from workers.stats import intervals, sequential
from workers.stats.quality import (
    Agreement,
    PositionBias,
    Proportion,
    TimeOnTask,
    annotator_agreement,
    attention_failure_rate,
    position_bias,
    time_on_task,
)

# Whose judgments the results count: the "origin" of a judgment (the `source` query parameter
# of the results page and exports, kept under that name so shared links keep working).
ORIGINS = {
    "real": "Real annotators",
    "simulated": "Simulated annotators",
    "all": "All annotators",
}

# Participants whose judgments the results leave out unless the researcher includes them (issue #21):
# rejected in review, or ended by the study for failing its attention checks (a participant who is
# both counts as rejected). The switch is `include_unreviewed`; on the page and the exports, the
# query parameter `unreviewed=include`, and `--include-unreviewed` on `export_study`.
LEFT_OUT_REASONS = {
    "rejected": "rejected in review",
    "ended": "ended for failed attention checks",
}
INCLUDE_UNREVIEWED = "include"  # the value of the `unreviewed` query parameter that includes them
_REJECTED = Q(assignment__participant__review_status=Participant.Review.REJECTED)
_ENDED = Q(assignment__participant__status=Participant.Status.ENDED)
# How a results snapshot names the scope it was computed for (`ResultsSnapshot.origin`, 16 chars).
_INCLUDED_SUFFIX = "+incl"


def scope_key(origin: str, include_unreviewed: bool) -> str:
    """The snapshot key of an origin and the switch: "real", or "real+incl" with them included."""
    return origin + _INCLUDED_SUFFIX if include_unreviewed else origin


def parse_scope(key: str) -> tuple[str, bool]:
    """`scope_key`'s inverse: (origin, include_unreviewed)."""
    if key.endswith(_INCLUDED_SUFFIX):
        return key[: -len(_INCLUDED_SUFFIX)], True
    return key, False


class JudgmentRow(NamedTuple):
    """One judgment with its item, as the results read it (`_read_judgments`)."""

    item: int
    is_attention_check: bool
    policy_id: int | None  # None only on attention checks
    policy: str | None  # None only on attention checks
    k: int
    opponent: str
    m: int
    prompt: int
    item_predicted: float | None
    participant: int
    cant_decide: bool
    count_policy: int | None  # c_A of the chosen text (None for "can't decide")
    count_opponent: int | None  # c_B of the chosen text
    candidate: int | None
    slot: int | None
    attention_passed: bool | None
    latency_ms: int | None


_COLUMNS = (
    "assignment__item_id",
    "assignment__item__is_attention_check",
    "assignment__item__policy_id",
    "assignment__item__policy__name",
    "assignment__item__k",
    "assignment__item__opponent_label",
    "assignment__item__m",
    "assignment__item__prompt_id",
    "assignment__item__predicted_win_rate",
    "assignment__participant_id",
    "cant_decide",
    "chosen__count_policy",
    "chosen__count_opponent",
    "chosen__candidate_id",
    "chosen_slot",
    "attention_passed",
    "latency_ms",
)
assert len(_COLUMNS) == len(JudgmentRow._fields)


class WinRateCell(NamedTuple):
    """A cell of the win-rate table."""

    policy: str
    k: int
    opponent: str
    m: int


class DecidedItem(NamedTuple):
    """An item decided by construction (never judged), as it enters its cell."""

    item: int
    prompt: int
    policy_id: int
    item_predicted: float | None


@dataclass(frozen=True)
class CellRow:
    """One (policy, k, opponent, m) row of the table."""

    policy: str
    k: int
    opponent: str
    m: int
    interval: intervals.WinRateInterval
    predicted: float | None  # mean ComparisonItem.predicted_win_rate, weighted as the credit
    judged_items: int = 0  # items with at least one analysed judgment
    items_to_judge: int = 0  # items of the cell that need judgment (judged or not yet)
    decided_items: int = 0  # items decided by construction, counted at credit k/(k+m)

    @property
    def predicted_inside(self) -> bool | None:
        if self.predicted is None:
            return None
        return self.interval.low <= self.predicted <= self.interval.high


HEADLINE_ROLE = "headline: the pre-registered adversary cell, two-way interval"
CONSERVATIVE_ROLE = "conservative summary: min over all tested opponents, simultaneous band"


@dataclass(frozen=True)
class RobustRow:
    """f̂(k) of one policy at one k (and opponent size m): the headline and the conservative summary.

    headline: the adversary cell's interval (None while it has no data); result: the min over
    every opponent with data, with its simultaneous band. The predictions are means over the
    judged prompts of the fits' robust win rates against the worst m-output opponent: over every
    candidate (`predicted`, what the adversary items measure), the fitted pool (`predicted_pool`,
    the certificate) and the held-out texts (`predicted_held_out`, a fresh opponent).
    """

    policy: str
    k: int
    m: int
    result: intervals.RobustWinRate
    predicted: float | None
    bound: MOutputBound  # guaranteed 1 - m/(k+1) for an equilibrium; no policy exceeds k/(k+m)
    headline: intervals.WinRateInterval | None = None
    predicted_pool: float | None = None
    predicted_held_out: float | None = None
    regularised: str = ""  # why the policy has no equilibrium guarantee (β > 0), else ""
    missing_opponents: tuple[str, ...] = ()  # opponents with items but no data yet: not in the min
    search: AdversarySearch | None = None  # set when the adversary of some prompt was searched for
    anytime: sequential.AnytimeInterval | None = None  # the headline cell's anytime-valid interval (#22)
    screened: ScreenedHeadline | None = None  # the annotators' adversary, the headline when the study uses it


@dataclass(frozen=True)
class AdversarySearch:
    """The headline cell's adversary was found by a search, not by enumerating every m-list, on
    `searched` of its `prompts` (`workers.policies.find_adversary`: exact enumeration when
    affordable, else greedy + swap with a certified lower bound; `PolicyFit.solver_stats`).

    gap_bound: the mean over the cell's judgments of their prompt's gap (win rate against the found
    adversary minus the certified lower bound; 0 where exact): the worst opponent the search may have
    missed would lower the headline's target by at most this much. gap_max: the largest on one prompt.
    """

    searched: int
    prompts: int
    gap_bound: float
    gap_max: float

    @property
    def text(self) -> str:
        return (f"adversary found by search (not enumeration) on {self.searched} of {self.prompts} prompts: the "
                f"worst opponent may win up to {self.gap_bound:.3f} more (certified bound, mean over the cell; "
                f"at most {self.gap_max:.3f} on one prompt)")


@dataclass(frozen=True)
class StudyResults:
    study_id: int
    origin: str  # whose judgments: a key of ORIGINS
    confidence: float
    n_judgments: int
    n_analysed: int
    n_excluded: int  # "can't decide" judgments excluded from win rates
    n_annotators: int
    n_decided: int = 0  # items decided by construction in the win rates (never judged)
    cells: list[CellRow] = field(default_factory=list)
    robust: list[RobustRow] = field(default_factory=list)
    position: PositionBias | None = None
    agreement: Agreement | None = None
    timing: TimeOnTask | None = None
    attention: Proportion | None = None
    few_clusters_warning: str | None = None  # `intervals.few_clusters_warning` for the analysed rows
    include_unreviewed: bool = False  # whether the judgments of `LEFT_OUT_REASONS` participants count
    # Judgments of the origin by such participants, per reason: left out, or counted when included.
    unreviewed: dict[str, int] = field(default_factory=dict)
    flagged: tuple[tuple[int, bool], ...] = ()  # `flagged_participants` when computed (staleness)
    adversary: str = Study.Adversary.MODEL  # whose adversary the headline is (`Study.adversary`)
    n_screening: int = 0  # judgments of the annotators' adversary's screening share

    @property
    def n_unreviewed(self) -> int:
        return sum(self.unreviewed.values())

    @property
    def unreviewed_text(self) -> str:
        """What the page says about them: how many judgments were left out (or included) and why."""
        parts = [f"{n:,} of participants {LEFT_OUT_REASONS[reason]}" for reason, n in self.unreviewed.items() if n]
        if not parts:
            return "No judgment is by a participant rejected in review or ended for failed attention checks."
        total = f"{self.n_unreviewed:,} judgment{'s' if self.n_unreviewed != 1 else ''}"
        if self.include_unreviewed:
            return f"Included on request: {total} ({'; '.join(parts)})."
        return f"Left out: {total} ({'; '.join(parts)})."

    # Per (k, m), every pair of policies' headline difference, and the finding in one sentence
    # (`studies/estimate/finding.py`); plain defaults so older pickled snapshots still load.
    differences: tuple[DifferenceRow, ...] = ()
    finding: str = ""

    @property
    def position_rows(self) -> list[tuple]:
        """(position, shown, picked, pick rate, chance rate) per displayed position."""
        p = self.position
        return list(zip(p.positions, p.shown, p.picked, p.pick_rate, p.chance_rate, strict=True)) if p else []

    @property
    def fingerprint(self) -> str:
        """Changes when the data do: cache-busts the plot."""
        return f"{self.n_judgments}-{self.n_analysed}-{self.n_decided}-{int(self.include_unreviewed)}"


def judgments_for(study: Study, origin: str = "real", *, include_unreviewed: bool = False) -> QuerySet[Judgment]:
    """The study's judgments that the numbers count: the one place they are selected.

    origin: 'real', 'simulated' or 'all' annotators. By default the judgments of participants
    rejected in review or ended for failed attention checks (`LEFT_OUT_REASONS`) are left out;
    `include_unreviewed=True` keeps them.
    """
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {sorted(ORIGINS)}, got {origin!r}")
    qs = Judgment.objects.filter(assignment__item__study=study)
    if origin != "all":
        qs = qs.filter(assignment__participant__is_simulated=(origin == "simulated"))
    if not include_unreviewed:
        qs = qs.exclude(_REJECTED | _ENDED)
    return qs


def unreviewed_judgments(study: Study, origin: str = "real") -> dict[str, int]:
    """Judgments of the origin by participants `judgments_for` leaves out by default, per reason
    (a key of `LEFT_OUT_REASONS`; a rejected participant who also ended counts as rejected)."""
    counts = judgments_for(study, origin, include_unreviewed=True).filter(_REJECTED | _ENDED).aggregate(
        rejected=Count("id", filter=_REJECTED), ended=Count("id", filter=_ENDED & ~_REJECTED)
    )
    return {reason: int(counts[reason] or 0) for reason in LEFT_OUT_REASONS}


def flagged_participants(study: Study) -> tuple[tuple[int, bool], ...]:
    """(id, rejected) of the study's participants whose judgments are left out by default: a
    results snapshot is stale once this changes (a review decision saves no judgment)."""
    rows = Participant.objects.filter(study=study).filter(
        Q(review_status=Participant.Review.REJECTED) | Q(status=Participant.Status.ENDED)
    )
    return tuple(
        (pk, review == Participant.Review.REJECTED)
        for pk, review in rows.order_by("id").values_list("id", "review_status")
    )


def _mean_or_none(values: list[float | None], weights: list[float] | None = None) -> float | None:
    weights = [1.0] * len(values) if weights is None else weights
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    if not pairs:
        return None
    return float(np.average([v for v, _ in pairs], weights=[w for _, w in pairs]))


def _item_cells(study: Study) -> tuple[Counter[WinRateCell], dict[WinRateCell, list[DecidedItem]]]:
    """Per cell: how many items need judgment, and the items decided by construction."""
    regular = ComparisonItem.objects.filter(study=study, is_attention_check=False)
    to_judge: Counter[WinRateCell] = Counter(
        {
            WinRateCell(policy, k, opponent, m): n
            for policy, k, opponent, m, n in regular.filter(needs_judgment=True)
            .values_list("policy__name", "k", "opponent_label", "m")
            .annotate(n=Count("id"))
            .order_by()
        }
    )
    decided: dict[WinRateCell, list[DecidedItem]] = defaultdict(list)
    for item, policy_id, policy, k, opponent, m, prompt, item_pred in (
        regular.filter(needs_judgment=False)
        .order_by("id")
        .values_list("id", "policy_id", "policy__name", "k", "opponent_label", "m", "prompt_id", "predicted_win_rate")
    ):
        decided[WinRateCell(policy, k, opponent, m)].append(DecidedItem(item, prompt, policy_id, item_pred))
    return to_judge, decided


@dataclass
class _Analysed:
    """The rows that enter the win rates, in order: the judgments, then the decided items.

    groups: cell → indices of its rows (in the order the cells were first met);
    judged_items: cell → the items with at least one analysed judgment.
    """

    credit: list[float] = field(default_factory=list)
    prompts: list[int] = field(default_factory=list)
    annotators: list[int] = field(default_factory=list)
    item_predicted: list[float | None] = field(default_factory=list)
    policy_ids: list[int | None] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    decided: list[bool] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    groups: dict[WinRateCell, list[int]] = field(default_factory=lambda: defaultdict(list))
    judged_items: dict[WinRateCell, set[int]] = field(default_factory=lambda: defaultdict(set))

    def add(self, key: WinRateCell, *, credit: float, prompt: int, annotator: int, item_predicted: float | None,
            policy_id: int | None, weight: float = 1.0, decided: bool = False, item: int = 0) -> None:
        self.groups[key].append(len(self.credit))
        self.items.append(item)
        self.credit.append(credit)
        self.prompts.append(prompt)
        self.annotators.append(annotator)
        self.item_predicted.append(item_predicted)
        self.policy_ids.append(policy_id)
        self.weights.append(weight)
        self.decided.append(decided)

    def arrays(self, idx: list[int]) -> dict[str, Any]:
        """The keyword arrays of `workers.stats` for the rows `idx`."""
        return {
            "credit": np.array(self.credit)[idx],
            "prompt_ids": np.array(self.prompts)[idx],
            "annotator_ids": np.array(self.annotators)[idx],
            "weights": np.array(self.weights)[idx],
            "decided": np.array(self.decided, dtype=bool)[idx],
        }

    def predicted_mean(self, idx: list[int]) -> float | None:
        return _mean_or_none([self.item_predicted[i] for i in idx], [self.weights[i] for i in idx])


@dataclass
class _Quality:
    """What the quality measures read from the judgments (positions, agreement, attention)."""

    positions: list[int] = field(default_factory=list)
    position_k: list[int] = field(default_factory=list)
    agree_items: list[int] = field(default_factory=list)
    agree_choices: list[int] = field(default_factory=list)
    agree_k: list[int] = field(default_factory=list)
    attention_passed: list[bool] = field(default_factory=list)
    n_excluded: int = 0  # "can't decide" judgments left out of the win rates


def _read_judgments(study: Study, origin: str, include_unreviewed: bool, only: Q | None = None) -> list[JudgmentRow]:
    rows = judgments_for(study, origin, include_unreviewed=include_unreviewed).order_by("id")
    return [JudgmentRow(*values) for values in (rows if only is None else rows.filter(only)).values_list(*_COLUMNS)]


def headline_arrays(study: Study, origin: str, *, policies: tuple[str, ...] | None = None,
                    k: int | None = None) -> dict[tuple[str, int, int], dict[str, Any]]:
    """(policy, k, m) → the adversary cell's rows as `workers.stats` arrays, judgments and decided items weighted
    as `compute_results` weighs them (the rows of the headline and its anytime-valid interval). `policies` and `k`
    read only those cells' judgments: the pre-registered question's live answer (`studies.estimate.question`)."""
    only = Q(assignment__item__opponent_label=ComparisonItem.ADVERSARY, assignment__item__is_attention_check=False)
    only &= Q() if policies is None else Q(assignment__item__policy__name__in=policies)
    only &= Q() if k is None else Q(assignment__item__k=k)
    analysed, _ = _analyse_judgments(study, _read_judgments(study, origin, False, only))
    _add_decided_items(analysed, study, *_item_cells(study))
    return {(key.policy, key.k, key.m): analysed.arrays(idx) for key, idx in analysed.groups.items()
            if key.opponent == ComparisonItem.ADVERSARY and (policies is None or key.policy in policies)
            and (k is None or key.k == k)}  # fmt: skip


def _analyse_judgments(study: Study, rows: list[JudgmentRow]) -> tuple[_Analysed, _Quality]:
    """Each judgment's credit (`workers.policies.credit.judgment_credit`) in its cell, and the
    quality measures' inputs."""
    shown_counts = dict(
        ItemCandidate.objects.filter(item__study=study).values("item").annotate(n=Count("id")).values_list("item", "n")
    )
    tie = study.cant_decide_analysis == Study.CantDecide.TIE
    analysed, quality = _Analysed(), _Quality()
    for row in rows:
        if row.is_attention_check:
            if row.attention_passed is not None:
                quality.attention_passed.append(row.attention_passed)
            continue
        picked = not row.cant_decide
        credit = judgment_credit(row.count_policy if picked else None, row.count_opponent if picked else None,
                                 k=row.k, m=row.m, cant_decide_as_tie=tie)
        if credit is None:
            quality.n_excluded += 1
            continue
        if picked:  # a pick has a slot and a chosen candidate
            slot, candidate = cast(int, row.slot), cast(int, row.candidate)
            quality.positions.append(slot)
            quality.position_k.append(shown_counts.get(row.item, slot))
            quality.agree_items.append(row.item)
            quality.agree_choices.append(candidate)
            quality.agree_k.append(shown_counts.get(row.item, 1))
        key = WinRateCell(cast(str, row.policy), row.k, row.opponent, row.m)  # regular items have a policy
        analysed.judged_items[key].add(row.item)
        analysed.add(key, credit=credit, prompt=row.prompt, annotator=row.participant,
                     item_predicted=row.item_predicted, policy_id=row.policy_id, item=row.item)
    return analysed, quality


def _add_decided_items(analysed: _Analysed, study: Study, to_judge: Counter[WinRateCell],
                       decided_items: dict[WinRateCell, list[DecidedItem]]) -> None:
    """Items decided by construction, weighted as the module docstring says
    (`workers.policies.credit.decided_item_weight`); none while nothing is analysed."""
    if not analysed.credit:
        return
    for key in sorted(set(analysed.groups) | {key for key in decided_items if not to_judge[key]}):
        n_judged = len(analysed.groups.get(key, ()))
        weight = decided_item_weight(n_judged, to_judge[key], study.annotations_per_item)
        for decided in decided_items.get(key, ()):
            analysed.add(key, credit=tie_credit(key.k, key.m), prompt=decided.prompt,
                         annotator=-decided.item,  # ignored by the analysis: a decided row has no annotator
                         item_predicted=decided.item_predicted, policy_id=decided.policy_id,
                         weight=weight, decided=True, item=decided.item)


def _cell_rows(analysed: _Analysed, to_judge: Counter[WinRateCell], confidence: float) -> list[CellRow]:
    cells = []
    for key, idx in sorted(analysed.groups.items()):
        interval = intervals.design_interval(**analysed.arrays(idx), confidence=confidence)
        cells.append(CellRow(
            key.policy, key.k, key.opponent, key.m, interval, analysed.predicted_mean(idx),
            judged_items=len(analysed.judged_items[key]), items_to_judge=to_judge[key],
            decided_items=interval.n_decided,
        ))  # fmt: skip
    return cells


class _FitPredictions(NamedTuple):
    overall: float | None
    pool: float | None
    held_out: float | None
    exact: bool | None = None  # whether the adversary was enumerated (None: not recorded)
    gap: float | None = None  # its certified gap when searched


def _fit_predictions(study: Study) -> dict[tuple[int | None, int, int], _FitPredictions]:
    """(policy id, prompt id, k) → the fit's robust win rates (`studies.steps.fit.predictions`)."""
    return {
        (policy_id, prompt, k): _FitPredictions(overall, pool, held, exact, gap)
        for policy_id, prompt, k, overall, pool, held, exact, gap in PolicyFit.objects.filter(
            policy__study=study
        ).values_list(
            "policy_id", "prompt_id", "k", "predicted_robust_win_rate", "pool_robust_win_rate",
            "held_out_robust_win_rate", "solver_stats__adversary_exact", "solver_stats__adversary_gap",
        )
    }


def _adversary_search(analysed: _Analysed, fits: dict[tuple[int | None, int, int], _FitPredictions],
                      idx: list[int], k: int) -> AdversarySearch | None:
    """How the adversary cell's rows `idx` got their adversary: None when every prompt's was enumerated."""
    per_row = [fits.get((analysed.policy_ids[i], analysed.prompts[i], k)) for i in idx]
    searched = {analysed.prompts[i] for i, f in zip(idx, per_row, strict=True) if f is not None and f.exact is False}
    if not searched:
        return None
    gaps = [float(f.gap or 0.0) if f is not None and f.exact is False else 0.0 for f in per_row]
    weights = [analysed.weights[i] for i in idx]
    return AdversarySearch(searched=len(searched), prompts=len({analysed.prompts[i] for i in idx}),
                           gap_bound=float(np.average(gaps, weights=weights)), gap_max=max(gaps))


def _robust_rows(analysed: _Analysed, study: Study, cells: list[CellRow], cells_with_items: set[WinRateCell], *,
                 confidence: float, n_resamples: int, rng: np.random.Generator) -> list[RobustRow]:
    """Per (policy, k, m): the headline adversary cell and the min over the opponents with data."""
    fits = _fit_predictions(study)
    notes = {policy.name: policy.regularisation_note for policy in study.policies.all()}
    headline = {(c.policy, c.k, c.m): c.interval for c in cells if c.opponent == ComparisonItem.ADVERSARY}
    by_policy_k: dict[tuple[str, int, int], list[tuple[str, list[int]]]] = defaultdict(list)
    for key, idx in analysed.groups.items():
        by_policy_k[(key.policy, key.k, key.m)].append((key.opponent, idx))
    opponents_with_items: dict[tuple[str, int, int], set[str]] = defaultdict(set)
    for key in cells_with_items:
        opponents_with_items[(key.policy, key.k, key.m)].add(key.opponent)
    robust = []
    for (policy, k, m), members in sorted(by_policy_k.items()):
        idx = [i for _, members_idx in members for i in members_idx]
        labels = [opponent for opponent, members_idx in members for _ in members_idx]
        result = intervals.robust_win_rate_interval(
            **analysed.arrays(idx), opponent_ids=labels, confidence=confidence, n_resamples=n_resamples, rng=rng,
            few_clusters=True,
        )
        per_row = [fits.get((analysed.policy_ids[i], analysed.prompts[i], k)) for i in idx]
        weights = [analysed.weights[i] for i in idx]
        predicted = [_mean_or_none([None if f is None else f[j] for f in per_row], weights) for j in range(3)]
        missing = tuple(sorted(opponents_with_items[(policy, k, m)] - {opponent for opponent, _ in members}))
        adversary_idx = [i for opponent, rows in members if opponent == ComparisonItem.ADVERSARY for i in rows]
        robust.append(RobustRow(
            policy, k, m, result, predicted[0], m_output_bound(k, m), headline=headline.get((policy, k, m)),
            predicted_pool=predicted[1], predicted_held_out=predicted[2], regularised=notes.get(policy, ""),
            missing_opponents=missing, search=_adversary_search(analysed, fits, adversary_idx, k),
        ))  # fmt: skip
    return robust


def _with_anytime(robust: list[RobustRow], analysed: _Analysed, planned: int, confidence: float) -> list[RobustRow]:
    """Each headline with its anytime-valid interval (`workers.stats.sequential`, docs/theory.md §11), from the
    adversary cell's rows: valid however often the page is read, unlike the fixed-time interval beside it."""
    out = []
    for row in robust:
        idx = next((idx for key, idx in analysed.groups.items() if (key.policy, key.k, key.m, key.opponent)
                    == (row.policy, row.k, row.m, ComparisonItem.ADVERSARY)), None)  # fmt: skip
        if idx is None:
            out.append(row)
            continue
        a = analysed.arrays(idx)
        anytime = sequential.anytime_interval(a["credit"], a["prompt_ids"], weights=a["weights"],
                                              planned_units=planned, confidence=confidence)  # fmt: skip
        out.append(dataclasses.replace(row, anytime=anytime))
    return out


def compute_results(
    study: Study,
    *,
    origin: str = "real",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = None,
    include_unreviewed: bool = False,
) -> StudyResults:
    """Everything the results page and the summary export show, from one pass over the judgments.

    `seed` (default: the study's seed) makes the simultaneous band of f̂(k) reproducible.
    `include_unreviewed` counts the judgments `judgments_for` leaves out by default.
    """
    flagged = flagged_participants(study)
    rows = _read_judgments(study, origin, include_unreviewed)
    rng = np.random.default_rng(study.seed if seed is None else seed)
    analysed, quality = _analyse_judgments(study, rows)
    n_analysed = len(analysed.credit)
    to_judge, decided_items = _item_cells(study)
    _add_decided_items(analysed, study, to_judge, decided_items)
    cells = _cell_rows(analysed, to_judge, confidence)
    robust = _robust_rows(analysed, study, cells, set(to_judge) | set(decided_items), confidence=confidence,
                          n_resamples=n_resamples, rng=rng)
    judged = [a for a, decided in zip(analysed.annotators, analysed.decided, strict=True) if not decided]
    differences, finding = _finding(study, analysed, cells, confidence)
    return StudyResults(
        study_id=study.pk,
        origin=origin,
        confidence=confidence,
        n_judgments=len(rows),
        n_analysed=n_analysed,
        n_excluded=quality.n_excluded,
        n_annotators=len({row.participant for row in rows}),
        n_decided=sum(analysed.decided),
        cells=cells,
        robust=screened_rows(_with_anytime(robust, analysed, study.prompts.count(), confidence), study, analysed,
                             confidence),
        adversary=study.adversary,
        n_screening=n_screening_judgments(study, analysed),
        few_clusters_warning=intervals.few_clusters_warning(len(set(analysed.prompts)), len(set(judged)))
        if analysed.credit else None,
        position=position_bias(quality.positions, quality.position_k),
        agreement=annotator_agreement(quality.agree_items, quality.agree_choices, quality.agree_k),
        timing=time_on_task([np.nan if row.latency_ms is None else row.latency_ms for row in rows] or np.zeros(0)),
        attention=attention_failure_rate(np.array(quality.attention_passed, dtype=bool)),
        include_unreviewed=include_unreviewed,
        unreviewed=unreviewed_judgments(study, origin) if flagged else dict.fromkeys(LEFT_OUT_REASONS, 0),
        flagged=flagged,

        differences=differences,
        finding=finding,
    )


def _finding(study: Study, analysed: _Analysed, cells: list[CellRow],
             confidence: float) -> tuple[tuple[DifferenceRow, ...], str]:
    """The headline cells' pairwise differences and the sentence (`studies/estimate/finding.py`)."""
    policies = list(study.policies.order_by("id").values_list("name", "kind"))
    headlines = {(key.policy, key.k, key.m): analysed.arrays(idx) for key, idx in analysed.groups.items()
                 if key.opponent == ComparisonItem.ADVERSARY}
    differences = tuple(difference_rows(headlines, [name for name, _ in policies], confidence))
    estimates = {(c.policy, c.k, c.m): c.interval.estimate for c in cells if c.opponent == ComparisonItem.ADVERSARY}
    primary = primary_policy(policies, Policy.Kind.MULTIPLAYER)
    model = "the model's adversary" if study.adversary == Study.Adversary.ANNOTATORS else "the adversary"
    return differences, finding_sentence(differences, estimates, primary, confidence, model)


SUMMARY_HEADER = (
    "row", "policy", "k", "opponent", "m", "n", "n_prompts", "n_annotators", "estimate", "ci_low", "ci_high",
    "confidence", "predicted", "reference_k_over_k_plus_m", "method", "n_decided_items", "decided_weight_share",
    "role", "predicted_pool", "predicted_held_out", "guaranteed_1_minus_m_over_k_plus_1", "regularised",
    "unreviewed_judgments", "unreviewed_included", "adversary_searched_prompts", "adversary_gap_bound",
    *SCREENED_COLUMNS,
)  # fmt: skip


def _interval_fields(r: intervals.WinRateInterval) -> tuple[object, ...]:
    """n … decided_weight_share of one two-way interval, as the header orders them."""
    return (r.n, r.n_prompts, r.n_annotators, r.estimate, r.low, r.high, r.confidence)


def summary_rows(results: StudyResults) -> Iterator[tuple[object, ...]]:
    """`_summary_rows` with the columns and rows of the annotators' adversary (`screened.with_screened`)."""
    return with_screened(results, _summary_rows(results), SUMMARY_HEADER)


def _summary_rows(results: StudyResults) -> Iterator[tuple[object, ...]]:
    """The summary table as CSV-ready tuples: one row per cell, then per (policy, k, m) the headline
    (the adversary cell, `HEADLINE_ROLE`) and the conservative summary (`CONSERVATIVE_ROLE`).

    `role` says which is which. n counts judgments; n_decided_items the items decided by
    construction in the same estimate, and decided_weight_share their share of its weight (for the
    min over opponents, the worst opponent's). reference_k_over_k_plus_m is the ceiling no policy
    exceeds; guaranteed_1_minus_m_over_k_plus_1 what an equilibrium is guaranteed (theory.md §2).
    unreviewed_judgments counts the judgments of participants rejected in review or ended for failed
    attention checks, and unreviewed_included says whether they are in the numbers (by default not;
    `judgments_for`). On the rows that rest on the adversary cell, adversary_searched_prompts is the
    number of prompts whose adversary was searched for rather than enumerated (0: all exact), and
    adversary_gap_bound how much lower the worst opponent's win rate could be (`AdversarySearch`).
    """
    review = (results.n_unreviewed, "true" if results.include_unreviewed else "false")
    searches = {(r.policy, r.k, r.m): _search_fields(r.search) for r in results.robust}
    for row in results.cells:
        r = row.interval
        search = searches.get((row.policy, row.k, row.m)) if row.opponent == ComparisonItem.ADVERSARY else None
        yield ("win_rate", row.policy, row.k, row.opponent, row.m, *_interval_fields(r), row.predicted,
               row.k / (row.k + row.m), r.method, r.n_decided, r.decided_share, "cell", None, None, None, "",
               *review, *(search or (None, None)))  # fmt: skip
    for robust in results.robust:
        tail = (robust.bound.ceiling,)
        extra = (robust.predicted_pool, robust.predicted_held_out, robust.bound.guaranteed, robust.regularised,
                 *review, *_search_fields(robust.search))
        if robust.headline is not None:
            h = robust.headline
            yield ("headline_adversary_cell", robust.policy, robust.k, ComparisonItem.ADVERSARY, robust.m,
                   *_interval_fields(h), robust.predicted, *tail, h.method, h.n_decided, h.decided_share,
                   HEADLINE_ROLE, *extra)  # fmt: skip
        f = robust.result
        n = sum(c.n for c in f.per_opponent)
        worst = f.per_opponent[f.opponents.index(f.worst_opponent)]
        yield ("robust_min_over_opponents", robust.policy, robust.k, f"worst: {f.worst_opponent}", robust.m, n,
               max(c.n_prompts for c in f.per_opponent), max(c.n_annotators for c in f.per_opponent),
               f.estimate, f.low, f.high, f.confidence, robust.predicted, *tail, f.method,
               sum(c.n_decided for c in f.per_opponent), worst.decided_share, CONSERVATIVE_ROLE, *extra)  # fmt: skip


def _search_fields(search: AdversarySearch | None) -> tuple[int, float]:
    return (0, 0.0) if search is None else (search.searched, search.gap_bound)


def fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
