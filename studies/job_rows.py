"""What the jobs page says about each job: the chain's state is its running step's, and a finished
step shows a summary of its record (`Job.result`), not its last progress line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studies.models import Job


@dataclass(frozen=True)
class JobRow:
    job: Job
    is_chain: bool
    label: str  # what the job is
    status: str  # its state, in words
    details: str  # a summary when done, the progress line while it runs, the error when failed


# A running step whose heartbeat stopped (`Job.is_stale`): its worker died; Prepare retries it.
STALE = "Stale: the worker stopped"
STALE_HINT = ("No heartbeat from its worker: it stopped (a crash or a restart). Press Prepare on the study's page "
              "to run this step again; what was saved is kept.")


def _rate(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, int | float) else "?"


def _generate_summary(r: dict[str, Any]) -> str:
    parts = []
    if r.get("pools_generated"):
        parts.append(f"{r['pools_generated']} pools sampled, {r.get('tokens', 0):,} tokens"
                     + (f" at {_rate(r['tokens_per_second'])} tokens/s" if r.get("tokens_per_second") else ""))
    if r.get("pools_skipped"):
        parts.append(f"{r['pools_skipped']} pools already saved")
    if r.get("pools_imported"):
        parts.append(f"the imported candidates of {r['pools_imported']} prompts")
    return "; ".join(parts) or "nothing to sample"


def _items_summary(r: dict[str, Any]) -> str:
    text = f"{r.get('items', 0)} items"
    if r.get("decided_items"):
        text += f" ({r['decided_items']} decided by construction)"
    return text + f", {r.get('attention_checks', 0)} attention checks"


def step_summary(job: Job) -> str:
    """One line from a finished job's record."""
    r = job.result or {}
    if job.kind == Job.Kind.GENERATE:
        return _generate_summary(r)
    if job.kind == Job.Kind.POPULATE:
        sources = ", ".join(r.get("sources", []))
        return f"{r.get('prompts', 0)} prompts, {r.get('types', 0)} types per prompt" + (f" ({sources})" if sources else "")
    if job.kind == Job.Kind.FIT:
        text = f"{r.get('fits', 0)} policy fits"
        return text + (f"; not converged: {', '.join(r['not_converged'])}" if r.get("not_converged") else "")
    if job.kind == Job.Kind.BUILD_ITEMS:
        return _items_summary(r)
    if job.kind == Job.Kind.SIMULATE:
        return f"{r.get('annotators', 0)} simulated annotators, {r.get('judgments', 0)} judgments"
    if job.kind == Job.Kind.IMPORT_PROMPTS:
        return f"{r.get('created', 0)} prompts imported"
    if job.kind == Job.Kind.IMPORT_CANDIDATES:
        return f"{r.get('candidates', 0)} candidates imported"
    return job.progress_message


def chain_rows(chain: Job, steps: list[Job]) -> list[JobRow]:
    """The chain's row, then its steps'."""
    generate_only = (chain.params or {}).get("only") == Job.Kind.GENERATE
    label = "Generate only" if generate_only else chain.get_kind_display()
    current = next((s for s in steps if s.status != Job.Status.DONE), None)
    if chain.status == Job.Status.FAILED:
        status, details = chain.get_status_display(), chain.error
    elif chain.status == Job.Status.DONE or current is None:
        status = Job.Status.DONE.label
        details = "Candidates saved; the study stays a draft." if generate_only else "The study is ready."
    elif current.is_stale:
        status, details = f"{STALE}: {current.get_kind_display()}", STALE_HINT
    else:
        status = f"{current.get_status_display()}: {current.get_kind_display()}"
        details = current.progress_message
    rows = [JobRow(chain, True, label, status, details)]
    for step in steps:
        status = step.get_status_display()
        if step.status == Job.Status.DONE:
            details = step_summary(step)
        elif step.status == Job.Status.FAILED:
            details = step.error
        elif step.is_stale:
            status, details = STALE, STALE_HINT
        else:
            details = step.progress_message
        rows.append(JobRow(step, False, step.get_kind_display(), status, details))
    return rows
