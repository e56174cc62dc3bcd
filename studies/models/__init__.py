"""The data model: prompt → pool → population → fit → item → judgment, and the work around it.

The database enforces what must never be wrong (one candidate per (prompt, generator, index),
one judgment per assignment, counts and rates in range); model methods hold the rules about
one row; cross-model workflows live in `studies/services.py`, `studies/steps/` and
`studies/judgment/`. One module per side: `study.py` (the study and the first half of the data
path), `participants.py` (participants, assignments, judgments), `jobs.py` (jobs, results
snapshots, the LLMdoctor's rows), `question.py` (the pre-registered question, issue #22). Everything is imported from `studies.models`.
"""

from __future__ import annotations

from studies.models.jobs import (
    AllocationRun,
    Doctor,
    Job,
    JobQuerySet,
    PreferencePair,
    ResultsSnapshot,
    TokenRewardCache,
)
from studies.models.participants import (
    Assignment,
    Invite,
    Judgment,
    Participant,
    ParticipantQuerySet,
    StudySeats,
)
from studies.models.question import StudyQuestion
from studies.models.study import (
    Candidate,
    ComparisonItem,
    GeneratorModel,
    ItemCandidate,
    Policy,
    PolicyFit,
    PopulationMatrix,
    PreferenceSource,
    Prompt,
    Study,
    _validate_allocation_half_width,
    _validate_assignment_timeout,
    _validate_held_out_fraction,
    _validate_k_values,
    _validate_object,
    new_completion_code,
    new_spread,
    new_token,
)

__all__ = [
    "AllocationRun", "Assignment", "Candidate", "ComparisonItem", "Doctor", "GeneratorModel", "Invite", "ItemCandidate", "Job", "JobQuerySet",
    "Judgment", "Participant", "ParticipantQuerySet", "Policy", "PolicyFit", "PopulationMatrix", "PreferencePair",
    "PreferenceSource", "Prompt", "ResultsSnapshot", "Study", "StudyQuestion", "StudySeats", "TokenRewardCache", "_validate_allocation_half_width",
    "_validate_assignment_timeout", "_validate_held_out_fraction",
    "_validate_k_values", "_validate_object", "new_completion_code", "new_spread", "new_token",
]  # fmt: skip
