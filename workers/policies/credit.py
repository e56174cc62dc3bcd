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

The population's *expected* credit for a shown set (an item's prediction) is
`workers.policies.expected_credit` (theory.md §1's per-position rule; `workers/policies/choice.py`).
A uniform pick over the k + m positions is that rule's credit when every position ties, so
`tie_credit` is the same rule applied to a "can't decide".

Pure Python; no Django. Not re-exported from `workers.policies`.
"""

from __future__ import annotations


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
    count_policy: int | None,
    count_opponent: int | None,
    *,
    k: int,
    m: int,
    cant_decide_as_tie: bool,
) -> float | None:
    """The credit of one judgment on a regular item; None when it is left out of the win rates.

    count_policy / count_opponent are c_A / c_B of the chosen text, both None for "can't
    decide", which counts as a tie (`tie_credit`) when `cant_decide_as_tie`, else not at all.
    """
    if count_policy is None or count_opponent is None:
        return tie_credit(k, m) if cant_decide_as_tie else None
    return pick_credit(count_policy, count_opponent)


def decided_item_weight(
    n_judged: int, n_to_judge: int, annotations_per_item: int
) -> float:
    """The weight of one decided item's row in a cell with `n_to_judge` items to judge and
    `n_judged` analysed judgments on them (each judgment weighs 1).

    n_judged / n_to_judge makes the decided items hold their share of the cell's items (a
    stratified mean); a cell with nothing to judge, or no judgment yet, weighs each decided row
    `annotations_per_item`, as a fully annotated item.
    """
    if n_to_judge and n_judged:
        return n_judged / n_to_judge
    return float(annotations_per_item)
