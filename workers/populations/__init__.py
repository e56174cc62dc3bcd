"""Preference populations: utilities ``U`` (T types × N responses) for one prompt's pool.

Each source function returns a :class:`SourceUtilities` ``(utilities, weights, type_labels)``:
``utilities`` is float64 of shape (T, N), ``weights`` float64 of shape (T,) summing to 1, and
``type_labels`` names the T types. :func:`combine_sources` stacks several sources into one
population for ``workers.policies.Population(utilities, weights)`` (theory §1).

Only the order of utilities within a type (and exact ties) matters to the maths of theory §1,
so sources on different scales (log-odds, cosines, reward logits) can be stacked without
rescaling.

Modules:

- :mod:`.judges`: the model-backed sources (persona judges, embedding similarity, reward
  models);
- :mod:`.utilities_csv`: the utilities CSV an admin uploads (read, then resolve candidate ids);
- :mod:`.combine`: :class:`SourceUtilities` and :func:`combine_sources`.

Pure Python: no Django import; torch is only touched through the model handles of
``workers.generation``, whose functions import it lazily.
"""

from __future__ import annotations

from .combine import SourceUtilities, combine_sources
from .judges import (
    DEFAULT_JUDGE_QUESTION,
    DEFAULT_JUDGE_SYSTEM,
    embed_texts,
    embedding_utilities,
    judge_answer_tokens,
    persona_judge_utilities,
    reward_model_utilities,
)
from .utilities_csv import (
    CandidateColumn,
    CsvRowError,
    UtilitiesCSVError,
    UtilitiesTable,
    UtilityRow,
    read_utilities_csv,
    utilities_by_group,
    utilities_from_csv,
)

__all__ = [
    "DEFAULT_JUDGE_QUESTION",
    "DEFAULT_JUDGE_SYSTEM",
    "CandidateColumn",
    "CsvRowError",
    "SourceUtilities",
    "UtilitiesCSVError",
    "UtilitiesTable",
    "UtilityRow",
    "combine_sources",
    "embed_texts",
    "embedding_utilities",
    "judge_answer_tokens",
    "persona_judge_utilities",
    "read_utilities_csv",
    "reward_model_utilities",
    "utilities_by_group",
    "utilities_from_csv",
]
