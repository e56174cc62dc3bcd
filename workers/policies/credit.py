"""The credit rule of a human pick, and the weight of items decided by construction (theory.md §1).

The one home of these rules: the item builder (`studies.steps.items`), the annotation service,
the results and the exports all call these functions rather than recomputing them inline.

- A pick of a shown text that c_A of the policy's k draws and c_B of the opponent's m draws
  produced credits the policy c_A / (c_A + c_B) (`pick_credit`).
- A pick that is uniform over the k + m shown positions credits k / (k + m) (`tie_credit`): a
  "can't decide" analysed as a tie, and an item decided by construction (every draw gave one
  text, so every pick is that text).
- An item decided by construction enters a results cell as one row of credit k / (k + m) whose
  weight makes every item of the cell count alike (`decided_item_weight`).
- `shown_set_credit`: the population's expected credit for one shown set (the item's prediction).

Pure NumPy; no Django. Not re-exported from `workers.policies` (issue #11 adds a public
`expected_credit` with another rule and signature there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def pick_credit(count_policy: int, count_opponent: int) -> float:
    """c_A / (c_A + c_B): the policy's credit when the chosen text came c_A times from its k
    draws and c_B times from the opponent's m draws (theory.md §1)."""
    return count_policy / (count_policy + count_opponent)


def tie_credit(k: int, m: int) -> float:
    """k / (k + m): the policy's credit for a pick uniform over the k + m shown positions.

    Used for a "can't decide" analysed as a tie, and for an item decided by construction (all
    k + m draws are one text, so the only possible pick credits the policy its k positions).
    """
    return k / (k + m)


def judgment_credit(
    count_policy: int | None, count_opponent: int | None, *, k: int, m: int, cant_decide_as_tie: bool
) -> float | None:
    """The credit of one judgment on a regular item; None when it is left out of the win rates.

    count_policy / count_opponent are c_A / c_B of the chosen text, both None for "can't
    decide", which counts as a tie (`tie_credit`) when `cant_decide_as_tie`, else not at all.
    """
    if count_policy is None or count_opponent is None:
        return tie_credit(k, m) if cant_decide_as_tie else None
    return pick_credit(count_policy, count_opponent)


def decided_item_weight(n_judged: int, n_to_judge: int, annotations_per_item: int) -> float:
    """The weight of one decided item's row in a cell with `n_to_judge` items to judge and
    `n_judged` analysed judgments on them (each judgment weighs 1).

    n_judged / n_to_judge makes the decided items hold their share of the cell's items (a
    stratified mean); a cell with nothing to judge, or no judgment yet, weighs each decided row
    `annotations_per_item`, as a fully annotated item.
    """
    if n_to_judge and n_judged:
        return n_judged / n_to_judge
    return float(annotations_per_item)


def shown_set_credit(
    utilities: FloatArray,
    weights: FloatArray,
    shown: Sequence[int],
    count_policy: Sequence[int],
    count_opponent: Sequence[int],
) -> float:
    """The population's expected credit for one shown set (theory.md §1).

    Each type t picks a shown text of maximal utility, splitting ties among the distinct shown
    texts uniformly; choosing text j credits the policy c_A(j) / (c_A(j) + c_B(j)):
    Σ_t w_t Σ_{j ∈ argmax_t} (1/|argmax_t|) · c_A(j)/(c_A(j)+c_B(j)).

    utilities: (T, N); weights: (T,); shown: column indices of the distinct texts;
    count_policy, count_opponent: c_A and c_B per shown text.
    """
    sub = utilities[:, list(shown)]
    c_a = np.asarray(count_policy, dtype=np.float64)
    credit = c_a / (c_a + np.asarray(count_opponent, dtype=np.float64))
    top = sub == sub.max(axis=1, keepdims=True)
    per_type = (top * credit).sum(axis=1) / top.sum(axis=1)
    return float(weights @ per_type)
