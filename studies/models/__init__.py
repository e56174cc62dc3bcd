"""The data model (split by side in the next commit); everything is imported from `studies.models`."""

from __future__ import annotations

from studies.models.study import *  # noqa: F403
from studies.models.study import _validate_held_out_fraction, _validate_k_values, _validate_object  # noqa: F401
