"""Plan a study with the annotators' adversary: both stages' judgments and the headline's predicted width.

The headline of such a study (docs/theory.md §12, `workers.stats.adversary.screened_minimum`) is the
bracket [low, high]: high = the confirmed estimate θ̂ + t·se_c (the confirmation share against each
prompt's selected opponent), low = the plug-in μ̂ − t·se_a (over all rows of each prompt's argmin
opponent). Its expected half-width is

    h = (t·se_c + t·se_a + E[θ̂ − μ̂]) / 2,     E[θ̂ − μ̂] = miss + curse,

where miss = θ_sel − θ ≥ 0 is what the screen misses and curse = θ − E μ̂ ≥ 0 the loser's curse of the
plug-in minimum. Neither is known before the study: both depend on how far apart the screened
opponents' win rates are. This module predicts them at the two ends:

* **tied** (`curse_factor` 1): every screened opponent of a prompt has the same win rate. Then
  miss = 0 and the curse is the largest it can be, e_J · s with e_J = E max of J standard normals and
  s the sd of one prompt's per-opponent mean (its item, annotator and residual noise over R items of A
  judgments). A bound, reached only when the opponents tie.
* **separated** (`curse_factor` 0): the worst opponent is far below the others, so the screen always
  finds it and the minimum has no curse: h = t·(se_c + se_a) / 2.

The planner sizes the study at `curse_factor` × the tied curse; the default, `CURSE_FACTOR` = 1, plans
for the tied bound. bench/bench_annotators_adversary.py --calibrate checks it against simulated studies
(docs/benchmarks.md, docs/planning.md): there the measured θ̂ − μ̂ was 0.74–0.90 of the tied curse and
the tied prediction 0.95–1.28× the measured half-width. se_c and se_a are `planning`'s cell standard
errors for R_c = R − R_s and R items
per prompt: the same variance model, floor and degrees of freedom as every other planned cell.

Pure NumPy/SciPy, no Django.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import integrate, stats

from .planning import (
    MAX_PROMPTS,
    VarianceComponents,
    _cell_width,
    _iv_predict,
    _smallest_prompts,
    _t_quantile,
)
from .study_design import ADVERSARY, CellKey, Design

__all__ = [
    "CURSE_FACTOR",
    "ScreenedPlan",
    "ScreenedStages",
    "ScreenedWidth",
    "expected_max_normal",
    "plan_screened",
    "predict_screened",
    "screen_labels",
    "screened_design",
]

#: The share of the tied loser's curse the planner plans for: 1, the tied bound (docs/planning.md;
#: checked by bench/bench_annotators_adversary.py --calibrate).
CURSE_FACTOR = 1.0
SCREEN_PREFIX = "screen "


def screen_labels(n_opponents: int) -> tuple[str, ...]:
    """The opponent labels of J screened opponents, as `studies/steps/screening.py` names them."""
    return (ADVERSARY, *(f"{SCREEN_PREFIX}{i + 1}" for i in range(1, n_opponents)))


def screened_design(design: Design, n_opponents: int) -> Design:
    """`design` with every policy meeting J screened opponents and every other policy (its items)."""
    if not isinstance(n_opponents, int) or n_opponents < 2:
        raise ValueError(f"n_opponents must be an integer >= 2, got {n_opponents!r}")
    if design.replicates < 2:
        raise ValueError(
            "the annotators' adversary needs replicates >= 2 (a screening and a confirmation share)"
        )
    labels = screen_labels(n_opponents)
    return replace(
        design,
        opponents={
            p: (*labels, *(q for q in design.policies if q != p))
            for p in design.policies
        },
    )


@functools.lru_cache(maxsize=64)
def expected_max_normal(n: int) -> float:
    """E max of n independent standard normals (0 for n = 1)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        return 0.0

    def integrand(x: float) -> float:
        return float(x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1))

    value, _ = integrate.quad(integrand, -12.0, 12.0)
    return float(value)


@dataclass(frozen=True)
class ScreenedWidth:
    """The predicted headline of one policy at one k: its parts and its half-width."""

    policy: str
    k: int
    mean: float
    se_confirm: float
    se_all: float
    t: float
    cell_sd: (
        float  # sd of one prompt's mean against one opponent (R items of A judgments)
    )
    curse: float  # the tied loser's curse e_J · cell_sd
    half_width: float  # at the curse factor
    half_width_tied: float
    half_width_separated: float


@dataclass(frozen=True)
class ScreenedStages:
    """A design's two stages: judgments asked for by each share, and the predicted headlines."""

    design: Design
    n_opponents: int
    screening_items: int  # per (prompt, policy, k, opponent)
    confirmation_items: int
    screening_judgments: int
    confirmation_judgments: int
    curse_factor: float
    widths: tuple[ScreenedWidth, ...]

    @property
    def headline(self) -> float:
        return max(w.half_width for w in self.widths)


def _stage_judgments(design: Design, n_opponents: int, items: int) -> int:
    cells = len(design.policies) * len(design.k_values) * n_opponents
    return design.prompts * cells * items * design.annotations_per_item


def predict_screened(
    design: Design,
    components: VarianceComponents,
    *,
    n_opponents: int,
    cell_means: Mapping[Any, float | None] | None = None,
    confidence: float = 0.95,
    curse_factor: float = CURSE_FACTOR,
) -> ScreenedStages:
    """Both stages of `design` (replicates R per screened opponent: R // 2 screen, the rest confirm)."""
    if not 0 <= curse_factor <= 1:
        raise ValueError(f"curse_factor must be in [0, 1], got {curse_factor!r}")
    full = screened_design(design, n_opponents)
    means, confidence = _iv_predict(full, components, cell_means, confidence)
    r_screen = design.replicates // 2
    confirm = replace(full, replicates=design.replicates - r_screen)
    widths = []
    for policy in design.policies:
        for k in design.k_values:
            cell = CellKey(policy, k, ADVERSARY)
            mean = means[cell]
            c, a = (
                _cell_width(confirm, components, cell, mean, confidence),
                _cell_width(full, components, cell, mean, confidence),
            )
            t = _t_quantile(a.df, confidence) if a.df >= 1 else math.inf
            sigma2 = components.dispersion * mean * (1 - mean)
            within = components.item / design.replicates + (
                1 - components.prompt - components.item
            ) / (design.replicates * design.annotations_per_item)
            sd = math.sqrt(max(sigma2 * within, 0.0))
            curse = expected_max_normal(n_opponents) * sd
            separated = (c.half_width + a.half_width) / 2
            widths.append(
                ScreenedWidth(
                    policy,
                    k,
                    mean,
                    c.se,
                    a.se,
                    t,
                    sd,
                    curse,
                    separated + curse_factor * curse / 2,
                    separated + curse / 2,
                    separated,
                )
            )
    return ScreenedStages(
        design=full,
        n_opponents=n_opponents,
        screening_items=r_screen,
        confirmation_items=design.replicates - r_screen,
        screening_judgments=_stage_judgments(design, n_opponents, r_screen),
        confirmation_judgments=_stage_judgments(
            design, n_opponents, design.replicates - r_screen
        ),
        curse_factor=curse_factor,
        widths=tuple(widths),
    )


#: Items per screened opponent, prompt, policy and k the plan tries (with the study's own).
REPLICATE_GRID = (2, 4, 6, 8, 12, 16, 24, 32)


@dataclass(frozen=True)
class ScreenedPlan:
    """The current design's stages, and the cheapest design that reaches ±half_width.

    The loser's curse is per prompt (the noise of one prompt's mean against one opponent), so more
    prompts do not shrink it: only more items per opponent do. So the plan tries each number of
    items per opponent in `REPLICATE_GRID` (and the study's), with the fewest prompts that reach the
    target at it; `recommended` is the one of fewest judgments, `alternatives` all that reach it
    (fewest judgments first). None / () when none does.
    """

    target_half_width: float
    current: ScreenedStages
    recommended: ScreenedStages | None
    alternatives: tuple[ScreenedStages, ...] = ()


def plan_screened(
    design: Design,
    components: VarianceComponents,
    *,
    n_opponents: int,
    half_width: float,
    cell_means: Mapping[Any, float | None] | None = None,
    confidence: float = 0.95,
    curse_factor: float = CURSE_FACTOR,
) -> ScreenedPlan:
    """`predict_screened` now, and at the fewest prompts (up to `planning.MAX_PROMPTS`) that reach the target."""
    if (
        not isinstance(half_width, int | float)
        or not 0 < half_width < 0.5
        or not math.isfinite(half_width)
    ):
        raise ValueError(f"half_width must be in (0, 0.5), got {half_width!r}")

    def stages(d: Design) -> ScreenedStages:
        return predict_screened(d, components, n_opponents=n_opponents, cell_means=cell_means,
                                confidence=confidence, curse_factor=curse_factor)  # fmt: skip

    found = []
    for r in sorted(set(REPLICATE_GRID) | {design.replicates}):
        d = replace(design, replicates=r)
        if stages(replace(d, prompts=MAX_PROMPTS)).headline > half_width:
            continue  # the curse of r items per opponent alone is wider than the target
        best = _smallest_prompts(d, lambda x: stages(x).headline <= half_width)
        if best is not None:
            found.append(stages(replace(d, prompts=best)))
    found.sort(
        key=lambda st: (
            st.screening_judgments + st.confirmation_judgments,
            st.design.prompts,
        )
    )
    return ScreenedPlan(
        target_half_width=float(half_width),
        current=stages(design),
        recommended=found[0] if found else None,
        alternatives=tuple(found),
    )


def tied_bracket_parts(
    credit: Any, prompt_ids: Any, opponent_ids: Any
) -> tuple[float, int]:
    """From data: s = the root mean over (prompt, opponent) cells of var(credit)/n, and the most opponents
    of a prompt (the bench's check of the tied curse e_J · s against the measured θ̂ − μ̂)."""
    y = np.asarray(credit, dtype=np.float64)
    keys = list(
        zip(
            np.asarray(prompt_ids).tolist(),
            np.asarray(opponent_ids).tolist(),
            strict=True,
        )
    )
    groups: dict[tuple[object, object], list[float]] = {}
    for key, v in zip(keys, y.tolist(), strict=True):
        groups.setdefault(key, []).append(v)
    variances = [
        float(np.var(v, ddof=1)) / len(v) for v in groups.values() if len(v) > 1
    ]
    per_prompt: dict[object, int] = {}
    for p, _ in groups:
        per_prompt[p] = per_prompt.get(p, 0) + 1
    return (math.sqrt(float(np.mean(variances))) if variances else 0.0), max(
        per_prompt.values()
    )
