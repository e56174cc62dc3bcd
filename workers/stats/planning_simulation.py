"""Synthetic studies drawn from the planner's model, to check its predictions (pure NumPy).

`simulate_study` lays out a `study_design.Design` as ualign runs it and draws every judgment:

- items: one per (prompt, cell, replicate), plus the design's attention checks (they take
  annotators' time and inform no cell), each judged `annotations_per_item` times;
- assignment: as `studies.judgment.flow` hands items out (fewest live assignments first, in a
  per-participant shuffle), the items are dealt in rounds: every item once, in a random order,
  then every item again, and the stream is cut into participants of `items_per_participant`;
- credit: a pick between the policy's text and the opponent's, 1 with probability
  q = f_cell + p_(cell, prompt) + q_item + a_(cell, annotator), else 0. Each effect is ±sd with
  equal odds, sd² = share · f(1 − f), so Var(credit) = f(1 − f) splits exactly as the
  components say. Two-point effects keep q in [0, 1] for moderate shares (checked: a design
  whose q could leave [0, 1] is refused rather than clipped, which would change the variances).

tests/test_planning.py and bench/planning_validation.py feed the draws to `workers.stats.intervals`,
the estimator the results page uses, and compare the interval widths with `planning.predict_widths`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.stats.planning import VarianceComponents
from workers.stats.study_design import CellKey, Design

__all__ = ["SimulatedStudy", "simulate_study"]


@dataclass(frozen=True)
class SimulatedStudy:
    """The judgments of regular items, one entry each (attention checks dropped, as the analysis does).

    cells: the design's cells; cell[i] indexes into it.
    """

    credit: npt.NDArray[np.float64]
    prompt: npt.NDArray[np.int64]
    annotator: npt.NDArray[np.int64]
    cell: npt.NDArray[np.int64]
    item: npt.NDArray[np.int64]
    cells: tuple[CellKey, ...]
    participants: int

    def of_cell(
        self, index: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(credit, prompt ids, annotator ids) of one cell."""
        mask = self.cell == index
        return self.credit[mask], self.prompt[mask], self.annotator[mask]


def _deal(
    n_items: int, annotations: int, per_participant: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """The participant of each (round, item) assignment, shape (annotations, n_items)."""
    order = np.concatenate([rng.permutation(n_items) for _ in range(annotations)])
    person = np.arange(order.size) // per_participant
    owner = np.empty((annotations, n_items), dtype=np.int64)
    owner[np.repeat(np.arange(annotations), n_items), order] = person
    return owner


def simulate_study(
    design: Design,
    components: VarianceComponents,
    *,
    cell_means: Mapping[CellKey, float] | None = None,
    rng: np.random.Generator | int | None = None,
) -> SimulatedStudy:
    """One synthetic study of `design` under `components` (binary picks: dispersion is ignored)."""
    generator = np.random.default_rng(rng)
    cells = design.cells
    means = np.array([(cell_means or {}).get(c, 0.5) for c in cells])
    base = means * (1 - means)
    sd_p, sd_i, sd_a = (
        np.sqrt(share * base)
        for share in (components.prompt, components.item, components.annotator)
    )
    if np.any(means - sd_p - sd_i - sd_a < 0) or np.any(means + sd_p + sd_i + sd_a > 1):
        raise ValueError(
            "these shares and means could put a pick probability outside [0, 1]; use smaller shares"
        )
    n_cells, prompts, reps = len(cells), design.prompts, design.replicates
    # Regular item index = ((prompt * n_cells) + cell) * reps + replicate.
    n_regular = prompts * n_cells * reps
    owner = _deal(
        n_regular + design.attention_items,
        design.annotations_per_item,
        design.items_per_participant,
        generator,
    )[:, :n_regular]
    item = np.tile(np.arange(n_regular), design.annotations_per_item)
    annotator = owner.reshape(-1)
    prompt = item // (n_cells * reps)
    cell = (item // reps) % n_cells
    n_people = int(annotator.max()) + 1

    def sign(*shape: int) -> npt.NDArray[np.float64]:
        return generator.choice([-1.0, 1.0], size=shape)

    q = (
        means[cell]
        + (sd_p[:, None] * sign(n_cells, prompts))[cell, prompt]
        + (sd_i[cell] * sign(n_regular)[item])
        + (sd_a[:, None] * sign(n_cells, n_people))[cell, annotator]
    )
    credit = (generator.random(q.size) < q).astype(np.float64)
    return SimulatedStudy(credit, prompt, annotator, cell, item, cells, n_people)
