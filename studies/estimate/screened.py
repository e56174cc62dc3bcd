"""The annotators' adversary in the results: f̂(k) as the people decide the worst opponent (docs/theory.md §12).

For a study whose `Study.adversary` is "annotators", the items step showed each policy's k samples
against several screened opponents per prompt, each opponent's items split into a screening and a
confirmation share (`studies/steps/screening.py`, `ComparisonItem.share`). Per (policy, k, m) this
module hands every analysed row of those items (judgments and items decided by construction, with
the weights `studies/estimate/results.py` gives them) to `workers.stats.adversary.screened_minimum`:
the screening share picks, per prompt, the opponent people found worst; the confirmation share's
win rate against it is the headline, with the bracket interval of §12. The model's adversary cell
stays beside it, computed as in any study.

The rows come from results.py's analysis object (`Rows`), so the credit rule, the reviewed-only
selection and the decided items' weights are the ones every other number uses.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from studies.models import ComparisonItem, Study
from workers.stats.adversary import screened_minimum

ROLE = "headline: the annotators' adversary (screened minimum, confirmation share; bracket interval)"
MODEL_ROLE = "the model's adversary (beside the headline): its cell, two-way interval"


class Rows(Protocol):
    """What this module reads of results.py's `_Analysed`."""

    items: list[int]
    groups: Any  # WinRateCell → row indices
    item_predicted: list[float | None]
    decided: list[bool]

    def arrays(self, idx: list[int]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ScreenedHeadline:
    """f̂(k) against the opponent the annotators found worst, for one policy, k and m.

    estimate: the confirmation share's win rate against each prompt's selected opponent (prompts
    weighted equally); low, high: the bracket interval; plug_in: the mean over prompts of the min
    over screened opponents (all rows), the source of `low`; n_screen: screening judgments,
    n_confirm: confirmation judgments against the selected opponents; prompts: prompts with a
    selected opponent; opponents: screened opponents per prompt (most); selected_model: prompts
    whose selected opponent is the model's adversary.
    """

    estimate: float
    low: float
    high: float
    plug_in: float
    confidence: float
    n_screen: int
    n_confirm: int
    prompts: int
    opponents: int
    selected_model: int


def _share_of_items(study: Study) -> dict[int, str]:
    return dict(
        ComparisonItem.objects.filter(study=study, is_attention_check=False)
        .exclude(share=ComparisonItem.Share.NONE)
        .values_list("id", "share")
    )


def _rows_by_row(analysed: Rows, shares: dict[int, str]) -> dict[tuple[str, int, int], list[tuple[int, str]]]:
    """(policy, k, m) → (row, opponent label) of every analysed row on a screened item."""
    out: dict[tuple[str, int, int], list[tuple[int, str]]] = defaultdict(list)
    for key, idx in analysed.groups.items():
        for i in idx:
            if analysed.items[i] in shares:
                out[(key.policy, key.k, key.m)].append((i, key.opponent))
    return out


def screened_headline(analysed: Rows, rows: list[tuple[int, str]], shares: dict[int, str],
                      confidence: float) -> ScreenedHeadline | None:
    """`screened_minimum` on one (policy, k, m)'s rows; None until a confirmation row meets a selected opponent."""
    idx = [i for i, _ in rows]
    labels = [label for _, label in rows]
    a = analysed.arrays(idx)
    confirm = [shares[analysed.items[i]] == ComparisonItem.Share.CONFIRMATION for i in idx]
    predicted: dict[tuple[object, object], list[float]] = defaultdict(list)
    for (i, label), prompt in zip(rows, a["prompt_ids"], strict=True):
        value = analysed.item_predicted[i]
        if value is not None:
            predicted[(int(prompt), label)].append(float(value))
    prior = {key: float(np.mean(values)) for key, values in predicted.items()}
    try:
        result = screened_minimum(a["credit"], a["prompt_ids"], a["annotator_ids"], labels, confirm,
                                  confidence=confidence, model_win_rates=prior, weights=a["weights"],
                                  decided=a["decided"])  # fmt: skip
    except ValueError:
        return None
    per_prompt: dict[int, set[str]] = defaultdict(set)
    for p, label in zip(a["prompt_ids"], labels, strict=True):
        per_prompt[int(p)].add(label)
    return ScreenedHeadline(
        estimate=result.estimate, low=result.low, high=result.high, plug_in=result.plug_in, confidence=confidence,
        n_screen=result.n_screen, n_confirm=result.n_confirm, prompts=len(result.selected),
        opponents=max(len(v) for v in per_prompt.values()),
        selected_model=sum(1 for v in result.selected.values() if v == ComparisonItem.ADVERSARY),
    )


def screened_rows(robust: list[Any], study: Study, analysed: Rows, confidence: float) -> list[Any]:
    """Each `RobustRow` with its `screened` headline when the study uses the annotators' adversary."""
    if study.adversary != Study.Adversary.ANNOTATORS:
        return robust
    shares = _share_of_items(study)
    by_row = _rows_by_row(analysed, shares)
    out = []
    for row in robust:
        rows = by_row.get((row.policy, row.k, row.m))
        head = screened_headline(analysed, rows, shares, confidence) if rows else None
        out.append(dataclasses.replace(row, screened=head))
    return out


def n_screening_judgments(study: Study, analysed: Rows) -> int:
    """Analysed judgments (not decided items) on items of the screening share."""
    if study.adversary != Study.Adversary.ANNOTATORS:
        return 0
    screening = {item for item, share in _share_of_items(study).items() if share == ComparisonItem.Share.SCREENING}
    return sum(1 for item, dec in zip(analysed.items, analysed.decided, strict=True) if item in screening and not dec)


#: The summary CSV's columns for the annotators' adversary, on every row: which adversary the
#: study's headline uses ("model" or "annotators"), and the judgments its screening stage used.
SCREENED_COLUMNS = ("headline_adversary", "screening_judgments")
SCREENED_ROW = "headline_annotators_adversary"
SCREENED_OPPONENT = "annotators' adversary (per prompt, the screened opponent people found worst)"


def with_screened(results: Any, rows: Iterator[tuple[object, ...]], header: tuple[str, ...]
                  ) -> Iterator[tuple[object, ...]]:
    """The summary rows with `SCREENED_COLUMNS` appended; for the annotators' adversary, the
    model's adversary row renamed to `MODEL_ROLE` and, before each (policy, k, m)'s conservative
    row, the headline row (`SCREENED_ROW`, role `ROLE`) of `ScreenedHeadline`."""
    annotators = results.adversary == Study.Adversary.ANNOTATORS
    tail = (results.adversary, results.n_screening if annotators else 0)
    screened = {(r.policy, r.k, r.m): r.screened for r in results.robust if getattr(r, "screened", None)}
    for row in rows:
        named = dict(zip(header, (*row, *tail), strict=True))
        if annotators and named["row"] == "headline_adversary_cell":
            named["role"] = MODEL_ROLE
        head = screened.get((named["policy"], named["k"], named["m"]))
        if annotators and named["row"] == "robust_min_over_opponents" and head is not None:
            yield tuple(_screened_row(named, head).values())
        yield tuple(named.values())


def _screened_row(named: dict[str, object], head: ScreenedHeadline) -> dict[str, object]:
    return {
        **named, "row": SCREENED_ROW, "opponent": SCREENED_OPPONENT, "n": head.n_screen + head.n_confirm,
        "n_prompts": head.prompts, "n_annotators": None, "estimate": head.estimate, "ci_low": head.low,
        "ci_high": head.high, "confidence": head.confidence,
        "method": (f"screened minimum: {head.n_screen} screening judgments select, {head.n_confirm} confirmation "
                   f"judgments measure; lower end the plug-in minimum {head.plug_in:.4f}"),
        "n_decided_items": None, "decided_weight_share": None, "role": ROLE,
        "adversary_searched_prompts": None, "adversary_gap_bound": None,
    }  # fmt: skip
