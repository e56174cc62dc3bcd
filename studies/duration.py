"""How long a study takes a participant, for the consent page (and Prolific's "estimated time").

Estimate = items per participant × seconds per item + a fixed allowance for the consent,
instructions and completion pages, rounded up to whole minutes. Seconds per item is the median
time on task (`Judgment.latency_ms`, render to pick) of the study's real participants once it has
`MIN_JUDGMENTS` of them, and `DEFAULT_SECONDS_PER_ITEM` before that: about what reading two to
four short responses and picking one takes (the demo's tasks take 20–60 s; set your own number
of items per participant from a pilot with people if your responses are long). The consent page
shows the default-based estimate: the median reads a sample of the study's judgments, a cost that
grows with the study and has no place on the annotators' path (issue #14).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

from studies.models import Judgment, Study

DEFAULT_SECONDS_PER_ITEM = 40.0
SETUP_SECONDS = 90.0  # consent, instructions (and the comprehension question), completion
MIN_JUDGMENTS = 20  # real judgments before their median replaces the default
SAMPLE = 1000  # the most recent judgments the median is taken over


@dataclass(frozen=True)
class Duration:
    minutes: int
    items: int
    seconds_per_item: float
    measured: bool  # True: the median time on task of this study's judgments; False: the default


def estimated_duration(study: Study, *, measure: bool = True) -> Duration:
    """The estimate; `measure=False` skips the median (the consent page: on the annotators' path,
    where a read that grows with the study's judgments has no place), using the default per item."""
    latencies: list[int] = [] if not measure else [
        ms for ms in Judgment.objects.filter(
            assignment__item__study=study, assignment__participant__is_simulated=False, latency_ms__isnull=False
        ).order_by("-id").values_list("latency_ms", flat=True)[:SAMPLE]
        if ms is not None
    ]
    measured = len(latencies) >= MIN_JUDGMENTS
    per_item = statistics.median(latencies) / 1000 if measured else DEFAULT_SECONDS_PER_ITEM
    items = study.items_per_participant
    minutes = max(1, math.ceil((items * per_item + SETUP_SECONDS) / 60))
    return Duration(minutes, items, per_item, measured)


# "10 minutes", "about 15 min", "1 hour", "half an hour": the consent text already says how long.
_STATED_TIME = re.compile(r"\b(\d+|an?|half an?)\s*(-\s*\d+\s*)?(minutes?|mins?|hours?|hrs?)\b", re.IGNORECASE)


def states_duration(text: str) -> bool:
    """Whether the researcher's consent text gives its own time: then the consent page shows that
    one alone, not ours above it (two figures that disagree confuse participants, #25)."""
    return bool(_STATED_TIME.search(text or ""))
