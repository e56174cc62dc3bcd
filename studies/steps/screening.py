"""The annotators' adversary in the items step: which opponents each prompt screens, and each item's share.

A study whose `Study.adversary` is "annotators" (docs/theory.md §12) shows each policy's k samples,
per prompt and k, against `Study.screened_opponents` candidate m-lists instead of the model's
adversary alone: the model's adversary first (label `ComparisonItem.ADVERSARY`, so the model's
column of the results is the same cell as in any other study), then the rest of
`workers.stats.adversary.screening_opponents` (the model's next strongest lists and the worst
lists under perturbed and resampled populations), labelled "screen 2", "screen 3", … Each screened
opponent gets the study's `replicates` items, drawn as every item is; the first
`screening_replicates` of them form the *screening* share, the rest the *confirmation* share
(`ComparisonItem.share`). Replicates are exchangeable draws (each its own seeded sample of the
policy), so this fixed split is a random one; the estimate reads the share from the item
(`studies/estimate/screened.py`).

Everything is drawn from the study's seed and the texts of the prompt and policy, never database
ids, so a copy of a study screens the same opponents.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from studies.models import ComparisonItem, Policy, Study
from studies.steps import StepError
from studies.steps.fit import content_seed
from studies.steps.population import PromptPopulation
from workers.stats.adversary import screening_opponents

#: Seed stream of the screened opponents (the held-out split is stream 11).
SCREEN_STREAM = 12


def uses_annotators(study: Study) -> bool:
    return study.adversary == Study.Adversary.ANNOTATORS


def screening_replicates(replicates: int) -> int:
    """How many of an opponent's `replicates` items screen (the rest confirm): half, rounded down."""
    return replicates // 2


def item_share(study: Study, label: str, replicate: int) -> str:
    """The share (`ComparisonItem.Share`) of the item `replicate` against the opponent `label`."""
    if not uses_annotators(study) or not is_screened_label(label):
        return ComparisonItem.Share.NONE
    if replicate < screening_replicates(study.replicates):
        return ComparisonItem.Share.SCREENING
    return ComparisonItem.Share.CONFIRMATION


def is_screened_label(label: str) -> bool:
    return label == ComparisonItem.ADVERSARY or label.startswith(ComparisonItem.SCREEN_PREFIX)


def screen_label(position: int) -> str:
    """The opponent label of the screened opponent at `position` (0: the model's adversary)."""
    return ComparisonItem.ADVERSARY if position == 0 else f"{ComparisonItem.SCREEN_PREFIX}{position + 1}"


def adversary_opponents(
    study: Study, pp: PromptPopulation, policy: Policy, pi: npt.NDArray[np.float64], k: int, m: int,
    model_adversary: tuple[int, ...],
) -> list[tuple[str, tuple[int, ...]]]:
    """(label, m-list of population columns) of every adversary opponent the items show.

    The model's adversary alone for a study with the model's adversary; for the annotators' adversary
    the model's adversary first, then the other screened lists (`screening_opponents`), at most
    `study.screened_opponents` in all. A prompt with a single possible opponent can't be screened:
    a StepError, which the job shows.
    """
    adversary = tuple(int(i) for i in model_adversary)
    if not uses_annotators(study):
        return [(ComparisonItem.ADVERSARY, adversary)]
    rng = np.random.default_rng([study.seed, SCREEN_STREAM, k, *content_seed(pp.prompt.text),
                                 *content_seed(policy.name)])  # fmt: skip
    found = screening_opponents(pp.pop.utilities, pp.pop.weights, pi, k, m,
                                n_opponents=study.screened_opponents, rng=rng)  # fmt: skip
    lists = [adversary] + [tuple(y) for y in found if sorted(y) != sorted(adversary)]
    lists = lists[: study.screened_opponents]
    if len(lists) < 2:
        raise StepError(
            f"Prompt {pp.prompt.pk} has a single possible opponent of m = {m} responses, so the annotators' "
            "adversary has nothing to screen: give the prompt at least 2 candidate texts, or use the model's adversary."
        )
    return [(screen_label(i), ys) for i, ys in enumerate(lists)]
