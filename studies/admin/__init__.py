"""The researcher back office (Django's admin), in two modules: `study` (studies and their design,
and what the pipeline produced) and `people` (participants, invites, assignments, judgments,
jobs). Importing them registers their admin classes; `common` holds what both use.

Researchers create and edit studies, generator models, preference sources and policies here;
what the pipeline and annotators produce is read-only, so the record of a study can't be edited
by accident.
"""
from __future__ import annotations

from studies.admin import people, study

__all__ = ["people", "study"]
