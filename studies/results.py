"""A study's results: judgments from the database → arrays → `studies.analysis` → a summary.

The credit of a judgment is recomputed here from its provenance (theory.md §1) rather than
read from `Judgment.credit`, so the analysis follows the study's *current* "can't decide"
rule: a pick credits c_A / (c_A + c_B) of the chosen text; a "can't decide" is excluded, or
credited k / (k + m) when the study analyses it as a tie. (For picks the two agree; the
stored credit is exported beside the counts, so both can be checked.)

Win rates use the judgments on non-attention items only. Judgments are grouped per
(policy, k, opponent, m); f̂(k) is the min over the opponents of one (policy, k, m).

Items decided by construction (`ComparisonItem.needs_judgment` False: all k + m draws gave one
text, so the only possible pick credits k/(k+m)) are never shown to anyone, but they are part
of what the study measures: leaving them out would bias the win rate towards the items that
happen to show several texts. Each enters its cell as one row of credit k/(k+m), flagged
`decided` for `studies.analysis`: in its prompt's cluster, in no annotator's. Its weight makes
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

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from django.db.models import Count

from studies import analysis
from studies.models import ComparisonItem, ItemCandidate, Judgment, PolicyFit, Study

SOURCES = {
    "real": "Real annotators",
    "simulated": "Simulated annotators",
    "all": "All annotators",
}

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


@dataclass(frozen=True)
class CellRow:
    """One (policy, k, opponent, m) row of the table."""

    policy: str
    k: int
    opponent: str
    m: int
    interval: analysis.WinRateInterval
    predicted: float | None  # mean ComparisonItem.predicted_win_rate, weighted as the credit
    judged_items: int = 0  # items with at least one analysed judgment
    items_to_judge: int = 0  # items of the cell that need judgment (judged or not yet)
    decided_items: int = 0  # items decided by construction, counted at credit k/(k+m)

    @property
    def predicted_inside(self) -> bool | None:
        if self.predicted is None:
            return None
        return self.interval.low <= self.predicted <= self.interval.high


@dataclass(frozen=True)
class RobustRow:
    """f̂(k) of one policy at one k (and opponent size m)."""

    policy: str
    k: int
    m: int
    result: analysis.RobustWinRate
    predicted: float | None  # mean PolicyFit.predicted_robust_win_rate over the judged prompts
    optimum: float  # k / (k + m): the rate of the (k+1)-player equilibrium when m = 1
    missing_opponents: tuple[str, ...] = ()  # opponents with items but no data yet: not in the min


@dataclass(frozen=True)
class StudyResults:
    study_id: int
    source: str
    confidence: float
    n_judgments: int
    n_analysed: int
    n_excluded: int  # "can't decide" judgments excluded from win rates
    n_annotators: int
    n_decided: int = 0  # items decided by construction in the win rates (never judged)
    cells: list[CellRow] = field(default_factory=list)
    robust: list[RobustRow] = field(default_factory=list)
    position: analysis.PositionBias | None = None
    agreement: analysis.Agreement | None = None
    timing: analysis.TimeOnTask | None = None
    attention: analysis.Proportion | None = None

    @property
    def position_rows(self) -> list[tuple]:
        """(position, shown, picked, pick rate, chance rate) per displayed position."""
        p = self.position
        return list(zip(p.positions, p.shown, p.picked, p.pick_rate, p.chance_rate, strict=True)) if p else []

    @property
    def fingerprint(self) -> str:
        """Changes when the data do: cache-busts the plot."""
        return f"{self.n_judgments}-{self.n_analysed}-{self.n_decided}"


def judgments_for(study: Study, source: str = "real"):
    """The study's judgments, filtered by annotator source ('real', 'simulated' or 'all')."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    qs = Judgment.objects.filter(assignment__item__study=study)
    if source != "all":
        qs = qs.filter(assignment__participant__is_simulated=(source == "simulated"))
    return qs


def _mean_or_none(values: list[float | None], weights: list[float] | None = None) -> float | None:
    weights = [1.0] * len(values) if weights is None else weights
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    if not pairs:
        return None
    return float(np.average([v for v, _ in pairs], weights=[w for _, w in pairs]))


def _item_cells(study: Study) -> tuple[Counter, dict[tuple, list[tuple]]]:
    """Per (policy, k, opponent, m): how many items need judgment, and the decided items as
    (item id, prompt id, policy id, predicted win rate)."""
    regular = ComparisonItem.objects.filter(study=study, is_attention_check=False)
    to_judge = Counter(
        {
            (policy, k, opponent, m): n
            for policy, k, opponent, m, n in regular.filter(needs_judgment=True)
            .values_list("policy__name", "k", "opponent_label", "m")
            .annotate(n=Count("id"))
            .order_by()
        }
    )
    decided: dict[tuple, list[tuple]] = defaultdict(list)
    for item, policy_id, policy, k, opponent, m, prompt, item_pred in (
        regular.filter(needs_judgment=False)
        .order_by("id")
        .values_list("id", "policy_id", "policy__name", "k", "opponent_label", "m", "prompt_id", "predicted_win_rate")
    ):
        decided[(policy, k, opponent, m)].append((item, prompt, policy_id, item_pred))
    return to_judge, decided


def compute_results(
    study: Study,
    *,
    source: str = "real",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = None,
) -> StudyResults:
    """Everything the results page and the summary export show, from one pass over the judgments.

    `seed` (default: the study's seed) makes the simultaneous band of f̂(k) reproducible.
    """
    rows = list(judgments_for(study, source).order_by("id").values_list(*_COLUMNS))
    shown_counts = dict(
        ItemCandidate.objects.filter(item__study=study).values("item").annotate(n=Count("id")).values_list("item", "n")
    )
    tie = study.cant_decide_analysis == Study.CantDecide.TIE
    rng = np.random.default_rng(study.seed if seed is None else seed)

    groups: dict[tuple, list[int]] = defaultdict(list)
    judged_items: dict[tuple, set[int]] = defaultdict(set)
    credit, prompts, annotators, predicted = [], [], [], []
    attention_passed, positions, position_k = [], [], []
    agree_items, agree_choices, agree_k = [], [], []
    n_excluded = 0
    for (item, is_check, policy_id, policy, k, opponent, m, prompt, item_pred, person, cant, c_a, c_b,
         candidate, slot, passed, _latency) in rows:
        if is_check:
            if passed is not None:
                attention_passed.append(passed)
            continue
        if cant:
            if not tie:
                n_excluded += 1
                continue
            value = k / (k + m)
        else:
            value = c_a / (c_a + c_b)
            positions.append(slot)
            position_k.append(shown_counts.get(item, slot))
            agree_items.append(item)
            agree_choices.append(candidate)
            agree_k.append(shown_counts.get(item, 1))
        groups[(policy, k, opponent, m)].append(len(credit))
        judged_items[(policy, k, opponent, m)].add(item)
        credit.append(value)
        prompts.append(prompt)
        annotators.append(person)
        predicted.append((item_pred, policy_id))

    # Items decided by construction, weighted as the module docstring says.
    n_analysed = len(credit)
    to_judge, decided_items = _item_cells(study)
    weights, decided = [1.0] * n_analysed, [False] * n_analysed
    if n_analysed:
        for key in sorted(set(groups) | {key for key in decided_items if not to_judge[key]}):
            n_judged = len(groups.get(key, ()))
            weight = n_judged / to_judge[key] if to_judge[key] and n_judged else float(study.annotations_per_item)
            _policy, k, _opponent, m = key
            for item, prompt, policy_id, item_pred in decided_items.get(key, ()):
                groups[key].append(len(credit))
                credit.append(k / (k + m))
                prompts.append(prompt)
                annotators.append(-item)  # ignored by the analysis: a decided row has no annotator
                predicted.append((item_pred, policy_id))
                weights.append(weight)
                decided.append(True)

    credit_arr, prompt_arr, person_arr = np.array(credit), np.array(prompts), np.array(annotators)
    weight_arr, decided_arr = np.array(weights), np.array(decided, dtype=bool)
    cells = []
    for (policy, k, opponent, m), idx in sorted(groups.items()):
        interval = analysis.win_rate_interval(
            credit_arr[idx], prompt_arr[idx], person_arr[idx], weights=weight_arr[idx], decided=decided_arr[idx],
            confidence=confidence,
        )
        key = (policy, k, opponent, m)
        cells.append(CellRow(
            policy, k, opponent, m, interval, _mean_or_none([predicted[i][0] for i in idx], [weights[i] for i in idx]),
            judged_items=len(judged_items[key]), items_to_judge=to_judge[key],
            decided_items=interval.n_decided,
        ))  # fmt: skip

    fits = {
        (policy_id, prompt, k): value
        for policy_id, prompt, k, value in PolicyFit.objects.filter(policy__study=study).values_list(
            "policy_id", "prompt_id", "k", "predicted_robust_win_rate"
        )
    }
    by_policy_k: dict[tuple, list[tuple]] = defaultdict(list)
    for (policy, k, opponent, m), idx in groups.items():
        by_policy_k[(policy, k, m)].append((opponent, idx))
    opponents_with_items: dict[tuple, set[str]] = defaultdict(set)
    for policy, k, opponent, m in set(to_judge) | set(decided_items):
        opponents_with_items[(policy, k, m)].add(opponent)
    robust = []
    for (policy, k, m), members in sorted(by_policy_k.items()):
        idx = [i for _, members_idx in members for i in members_idx]
        labels = [opponent for opponent, members_idx in members for _ in members_idx]
        result = analysis.robust_win_rate_interval(
            credit_arr[idx], prompt_arr[idx], person_arr[idx], labels, weights=weight_arr[idx],
            decided=decided_arr[idx], confidence=confidence, n_resamples=n_resamples, rng=rng,
        )
        predicted_robust = _mean_or_none([fits.get((predicted[i][1], prompts[i], k)) for i in idx],
                                         [weights[i] for i in idx])
        missing = tuple(sorted(opponents_with_items[(policy, k, m)] - {opponent for opponent, _ in members}))
        robust.append(RobustRow(policy, k, m, result, predicted_robust, k / (k + m), missing))

    return StudyResults(
        study_id=study.pk,
        source=source,
        confidence=confidence,
        n_judgments=len(rows),
        n_analysed=n_analysed,
        n_excluded=n_excluded,
        n_annotators=len({row[9] for row in rows}),
        n_decided=sum(decided),
        cells=cells,
        robust=robust,
        position=analysis.position_bias(positions, position_k),
        agreement=analysis.annotator_agreement(agree_items, agree_choices, agree_k),
        timing=analysis.time_on_task([np.nan if row[16] is None else row[16] for row in rows] or np.zeros(0)),
        attention=analysis.attention_failure_rate(np.array(attention_passed, dtype=bool)),
    )


SUMMARY_HEADER = (
    "row", "policy", "k", "opponent", "m", "n", "n_prompts", "n_annotators", "estimate", "ci_low", "ci_high",
    "confidence", "predicted", "reference_k_over_k_plus_m", "method", "n_decided_items", "decided_weight_share",
)  # fmt: skip


def summary_rows(results: StudyResults):
    """The summary table as CSV-ready tuples: one row per cell, then one per f̂(k).

    n counts judgments; n_decided_items the items decided by construction in the same estimate,
    and decided_weight_share their share of its weight (for f̂(k), the worst opponent's).
    """
    for row in results.cells:
        r = row.interval
        yield ("win_rate", row.policy, row.k, row.opponent, row.m, r.n, r.n_prompts, r.n_annotators,
               r.estimate, r.low, r.high, r.confidence, row.predicted, row.k / (row.k + row.m), r.method,
               r.n_decided, r.decided_share)  # fmt: skip
    for row in results.robust:
        r = row.result
        n = sum(c.n for c in r.per_opponent)
        worst = r.per_opponent[r.opponents.index(r.worst_opponent)]
        yield ("robust_min_over_opponents", row.policy, row.k, f"worst: {r.worst_opponent}", row.m, n,
               max(c.n_prompts for c in r.per_opponent), max(c.n_annotators for c in r.per_opponent),
               r.estimate, r.low, r.high, r.confidence, row.predicted, row.optimum, r.method,
               sum(c.n_decided for c in r.per_opponent), worst.decided_share)  # fmt: skip


def results_plot_svg(results: StudyResults) -> str:
    """f̂(k) per policy against k, with interval bars and the k/(k+m) and ½ reference lines (SVG text).

    Drawn with matplotlib's SVG canvas on a bare Figure (no pyplot, so no global state and no
    GUI backend: safe in a threaded web process), imported here so that only this view loads it.
    """
    import io

    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    ks = sorted({row.k for row in results.robust}) or [1, 2, 4]
    ms = sorted({row.m for row in results.robust}) or [1]
    grid = np.linspace(min(ks), max(ks), 200) if len(ks) > 1 else np.array([ks[0] - 0.5, ks[0] + 0.5])
    for m in ms:
        ax.plot(grid, grid / (grid + m), color="black", linestyle="--", linewidth=1, label=f"k/(k+{m}) (optimum)")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="½")
    series: dict[tuple[str, int], list[RobustRow]] = defaultdict(list)
    for row in results.robust:
        series[(row.policy, row.m)].append(row)
    offsets = np.linspace(-0.12, 0.12, len(series)) if len(series) > 1 else [0.0] * len(series)
    for offset, ((policy, m), rows) in zip(offsets, sorted(series.items()), strict=True):
        x = np.array([row.k for row in rows], dtype=float) + offset
        y = np.array([row.result.estimate for row in rows])
        low = np.array([row.result.low for row in rows])
        high = np.array([row.result.high for row in rows])
        label = policy if len(ms) == 1 else f"{policy} (m={m})"
        ax.errorbar(x, y, yerr=[y - low, high - y], marker="o", capsize=3, label=label)
    ax.set_xticks(ks)
    ax.set_xlabel("k (responses shown by the policy)")
    ax.set_ylabel("f̂(k): min over opponents")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if not results.robust:
        ax.text(0.5, 0.5, "no judgments yet", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(f"Robust win rate with {round(results.confidence * 100)}% simultaneous intervals")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
