"""The Prepare chain's steps: the glue between the database and the arrays, one module per step.

    pool        prompt → merged Candidates of one generator            (workers.generation)
    population  prompt's candidates → PopulationMatrix U (T × N)        (workers.populations)
    doctor      pool population / judgments / CSV → pairs → token rewards → trained doctors
                (LLMdoctor policies only; then pool again for their guided candidates)  (workers.doctor)
    fit         population → one PolicyFit per (policy, k)             (workers.policies)
    items       fits → ComparisonItems with provenance counts, attention checks (workers.policies.credit)

Each module has per-prompt functions that write one prompt's rows in one transaction (a worker
that dies loses at most the prompt in flight; a re-run continues where it stopped) and one
study-level function that the Celery task (`studies.tasks`), the reproduction check and the
tests call. The maths lives in `workers` (pure, no Django); these modules import neither torch
nor transformers (`workers.generation` imports them inside its functions), so the web process
may import them.

Imports point down only: `studies.tasks` and `studies.services` import the steps; the steps
import models and `workers`, never services or tasks.
"""

from __future__ import annotations

from collections.abc import Callable

# on_progress(done, total, message): how a study-level step reports how far it is.
OnProgress = Callable[[float, float, str], None]


class StepError(Exception):
    """A problem the researcher can fix (bad configuration, missing inputs); shown on the job."""


def no_progress(done: float, total: float, message: str) -> None:
    """The default `OnProgress`: report nowhere."""
