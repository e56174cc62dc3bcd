"""CSV export of a study: HEADER + row generators per table, streamed in constant memory.

Tables: judgments, items, candidates, prompts, summary, pairs (LLMdoctor's preference pairs). No HTTP here: the views wrap
`iter_csv` in a StreamingHttpResponse, and `manage.py export_study` writes it to a file.

Constant memory: every table is read with `.values_list(...).iterator(chunk_size=...)` (a
server-side cursor on PostgreSQL) and written as it is read. A judgment row names the
candidates it showed, which live in ItemCandidate; instead of loading them all, judgments are
read in item order and merged with ItemCandidate rows read in the same order, so only the
current item's few rows are held.

Formula injection: every *text* cell (prompts, responses, rationales, names, labels) goes
through `studies.text.safe_text`, which explains the rule; numbers are written as numbers.

Judgment columns
----------------
shown: the texts in the order this annotator saw them, as "candidate_id:position" pairs joined
by ";" (position 1-based, as in chosen_position). chosen_count_policy / chosen_count_opponent
are c_A / c_B of the chosen text (theory.md §1); credit is the stored credit (empty when a
"can't decide" was excluded); participant is the pseudonym, never the access token. The table
holds every judgment of the origin; left_out_by_default names why the results and the summary
leave a judgment out unless asked ("rejected in review", "ended for failed attention checks"; empty
when it counts: `studies.estimate.results.judgments_for`).

Summary
-------
By default the summary counts reviewed judgments only, as the results page does; with
`include_unreviewed` (the `unreviewed=include` query parameter, `export_study --include-unreviewed`)
it counts everyone. Every row records which in unreviewed_included, next to unreviewed_judgments.

Item columns
------------
shown: "candidate_id:slot:c_A:c_B" per distinct text. needs_judgment is "false" for an item
decided by construction (one text from all k + m draws): nobody judges it, so it has no row in
the judgments table, and decided_credit holds its fixed credit k/(k+m) (empty otherwise). The
results count each such item at that credit (see `studies.estimate.results`), so the win rates can be
recomputed from these two tables (the rule: `workers.policies.credit`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from django.db.models import TextField
from django.db.models.functions import Cast

from studies.estimate.results import (
    LEFT_OUT_REASONS,
    SUMMARY_HEADER,
    compute_results,
    judgments_for,
    summary_rows,
)
from studies.models import (
    Candidate,
    ComparisonItem,
    ItemCandidate,
    Participant,
    Prompt,
    Study,
)
from studies.text import safe_text
from workers.policies.credit import tie_credit

CHUNK_SIZE = 5000
ROWS_PER_WRITE = 1000

JUDGMENT_HEADER = (
    "study", "judgment_id", "prompt_id", "prompt_external_id", "item_id", "is_attention_check", "policy", "k",
    "opponent", "m", "replicate", "shown", "chosen_candidate_id", "chosen_position", "chosen_count_policy",
    "chosen_count_opponent", "credit", "cant_decide", "attention_passed", "participant", "is_simulated",
    "latency_ms", "rendered_at", "created_at", "rationale", "left_out_by_default",
)  # fmt: skip
ITEM_HEADER = (
    "study", "item_id", "prompt_id", "prompt_external_id", "policy", "k", "opponent", "opponent_policy", "m",
    "replicate", "is_attention_check", "predicted_win_rate", "shown", "created_at", "needs_judgment", "decided_credit",
)  # fmt: skip
CANDIDATE_HEADER = (
    "study", "candidate_id", "prompt_id", "prompt_external_id", "generator", "sample_index", "multiplicity",
    "token_count", "is_attention_check", "text_sha256", "text",
)  # fmt: skip
PROMPT_HEADER = ("study", "prompt_id", "external_id", "text", "metadata", "created_at")
# LLMdoctor's preference pairs, in the columns the admin's pairs import reads back
# (workers.doctor.pairs.CSV_HEADER): no study column, so an export imports into another study as is.
PAIR_HEADER = ("prompt", "chosen", "rejected", "weight", "source")


def _time(value) -> str:
    return value.isoformat() if value is not None else ""


_FLAGS = {None: "", True: "true", False: "false"}


def _flag(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


def _number(value) -> object:
    return "" if value is None else value


def _shown_by_item(study: Study) -> Iterator[tuple[int, dict[int, tuple[int, int, int, int]]]]:
    """(item id, {ItemCandidate id: (candidate id, slot, c_A, c_B)}) in item-id order."""
    rows = (
        ItemCandidate.objects.filter(item__study=study)
        .order_by("item_id", "slot")
        .values_list("item_id", "id", "candidate_id", "slot", "count_policy", "count_opponent")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    current: int | None = None
    group: dict[int, tuple[int, int, int, int]] = {}
    for item_id, pk, candidate_id, slot, c_a, c_b in rows:
        if item_id != current:
            if current is not None:
                yield current, group
            current, group = item_id, {}
        group[pk] = (candidate_id, slot, c_a, c_b)
    if current is not None:
        yield current, group


class _ShownLookup:
    """Walks `_shown_by_item` forward as the judgments (read in item order) ask for items."""

    def __init__(self, study: Study) -> None:
        self._groups = _shown_by_item(study)
        self._item: float = -1
        self._shown: dict[int, tuple[int, int, int, int]] = {}

    def get(self, item_id: int) -> dict[int, tuple[int, int, int, int]]:
        while self._item < item_id:
            self._item, self._shown = next(self._groups, (float("inf"), {}))
        return self._shown if self._item == item_id else {}


def _iso_text(value: str | None) -> str:
    """A timestamp cast to text in SQL, as ISO 8601 with an explicit UTC offset.

    PostgreSQL (session time zone UTC, which Django sets) gives "2026-01-02 03:04:05.678+00",
    SQLite "2026-01-02 03:04:05.678" (naive UTC): both become "2026-01-02T03:04:05.678+00:00",
    what datetime.isoformat() writes. Casting in SQL skips parsing a datetime per cell, which
    was the largest single cost of the export.
    """
    if not value:
        return ""
    value = value.replace(" ", "T", 1)
    if value.endswith("+00"):
        return value + ":00"
    return value if ("+" in value[19:] or "-" in value[19:]) else value + "+00:00"


def _ids(order_text: str | None) -> list[str]:
    """A JSON list of ints cast to text ("[3, 1, 2]") → ["3", "1", "2"]."""
    inner = (order_text or "").strip()[1:-1]
    return [part.strip() for part in inner.split(",")] if inner.strip() else []


def _left_out(review: str, status: str) -> str:
    if review == Participant.Review.REJECTED:
        return LEFT_OUT_REASONS["rejected"]
    return LEFT_OUT_REASONS["ended"] if status == Participant.Status.ENDED else ""


def iter_judgment_rows(study: Study, *, origin: str = "all") -> Iterator[tuple]:
    shown_lookup = _ShownLookup(study)
    rows = (
        judgments_for(study, origin, include_unreviewed=True)
        .order_by("assignment__item_id", "id")
        .annotate(
            _order=Cast("assignment__display_order", TextField()),
            _rendered=Cast("rendered_at", TextField()),
            _created=Cast("created_at", TextField()),
        )
        .values_list(
            "id", "assignment__item__prompt_id", "assignment__item__prompt__external_id", "assignment__item_id",
            "assignment__item__is_attention_check", "assignment__item__policy__name", "assignment__item__k",
            "assignment__item__opponent_label", "assignment__item__m", "assignment__item__replicate",
            "_order", "chosen__candidate_id", "chosen_slot", "chosen__count_policy",
            "chosen__count_opponent", "credit", "cant_decide", "attention_passed",
            "assignment__participant__pseudonym", "assignment__participant__is_simulated", "latency_ms",
            "_rendered", "_created", "rationale", "assignment__participant__review_status",
            "assignment__participant__status",
        )  # fmt: skip
        .iterator(chunk_size=CHUNK_SIZE)
    )
    slug = safe_text(study.slug)
    flag = _FLAGS
    current_item: int | None = None
    fields: dict[str, str] = {}
    for (pk, prompt_id, external_id, item_id, is_check, policy, k, opponent, m, replicate, order, chosen,
         position, c_a, c_b, credit, cant, passed, pseudonym, simulated, latency, rendered, created,
         rationale, review, status) in rows:  # fmt: skip
        if item_id != current_item:
            current_item, fields = item_id, {}
            shown = shown_lookup.get(item_id)
            candidate_of = {str(ic): shown[ic][0] for ic in shown}
            canonical = [str(ic) for ic in sorted(shown, key=lambda ic: shown[ic][1])]
        shown_field = fields.get(order)  # annotators of one item often share a display order
        if shown_field is None:
            displayed = _ids(order) or canonical
            shown_field = fields[order] = ";".join(
                f"{candidate_of[ic]}:{pos}" for pos, ic in enumerate(displayed, 1) if ic in candidate_of
            )
        # None is written as an empty cell by the csv module.
        yield (
            slug, pk, prompt_id, safe_text(external_id), item_id, flag[is_check], safe_text(policy), k,
            safe_text(opponent), m, replicate, shown_field, chosen, position, c_a, c_b, credit, flag[cant],
            flag[passed], safe_text(pseudonym), flag[simulated], latency, _iso_text(rendered), _iso_text(created),
            safe_text(rationale), _left_out(review, status),
        )  # fmt: skip


def iter_item_rows(study: Study) -> Iterator[tuple]:
    shown_lookup = _ShownLookup(study)
    rows = (
        ComparisonItem.objects.filter(study=study)
        .order_by("id")
        .values_list(
            "id", "prompt_id", "prompt__external_id", "policy__name", "k", "opponent_label",
            "opponent_policy__name", "m", "replicate", "is_attention_check", "predicted_win_rate", "created_at",
            "needs_judgment",
        )  # fmt: skip
        .iterator(chunk_size=CHUNK_SIZE)
    )
    slug = safe_text(study.slug)
    for (pk, prompt_id, external_id, policy, k, opponent, opponent_policy, m, replicate, is_check, predicted, created,
         needs_judgment) in rows:  # fmt: skip
        shown = sorted(shown_lookup.get(pk).values(), key=lambda v: v[1])
        shown_field = ";".join(f"{cand}:{slot}:{c_a}:{c_b}" for cand, slot, c_a, c_b in shown)
        yield (
            slug, pk, prompt_id, safe_text(external_id), safe_text(policy), k, safe_text(opponent),
            safe_text(opponent_policy), m, replicate, _flag(is_check), _number(predicted), shown_field,
            _time(created), _flag(needs_judgment), "" if needs_judgment else tie_credit(k, m),
        )  # fmt: skip


def iter_candidate_rows(study: Study) -> Iterator[tuple]:
    rows = (
        Candidate.objects.filter(prompt__study=study)
        .order_by("id")
        .values_list(
            "id", "prompt_id", "prompt__external_id", "generator__name", "sample_index", "multiplicity",
            "token_count", "is_attention_check", "text_sha256", "text",
        )  # fmt: skip
        .iterator(chunk_size=CHUNK_SIZE)
    )
    slug = safe_text(study.slug)
    for pk, prompt_id, external_id, generator, index, multiplicity, tokens, is_check, sha, text in rows:
        yield (slug, pk, prompt_id, safe_text(external_id), safe_text(generator), index, multiplicity, tokens,
               _flag(is_check), sha, safe_text(text))  # fmt: skip


def iter_pair_rows(study: Study) -> Iterator[tuple]:
    """Every stored preference pair of the study, by pair set, in order (text cells guarded)."""
    rows = study.preference_pairs.order_by("pair_set", "id").values_list(
        "prompt_text", "chosen", "rejected", "weight", "source"
    )
    for prompt, chosen, rejected, weight, source in rows.iterator(chunk_size=CHUNK_SIZE):
        yield (safe_text(prompt), safe_text(chosen), safe_text(rejected), float(weight), safe_text(source))


def iter_prompt_rows(study: Study) -> Iterator[tuple]:
    rows = (
        Prompt.objects.filter(study=study)
        .order_by("id")
        .values_list("id", "external_id", "text", "metadata", "created_at")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    slug = safe_text(study.slug)
    for pk, external_id, text, metadata, created in rows:
        yield slug, pk, safe_text(external_id), safe_text(text), safe_text(json.dumps(metadata)), _time(created)


def iter_summary_rows(study: Study, *, origin: str = "real", include_unreviewed: bool = False) -> Iterator[tuple]:
    slug = safe_text(study.slug)
    for row in summary_rows(compute_results(study, origin=origin, include_unreviewed=include_unreviewed)):
        yield (slug, *(safe_text(v) if isinstance(v, str) else _number(v) for v in row))


def summary_header() -> tuple[str, ...]:
    return ("study", *SUMMARY_HEADER)


TABLES = {
    "judgments": "One row per judgment, with what was shown and chosen.",
    "items": "One row per comparison item, with its shown texts and provenance counts.",
    "candidates": "One row per distinct response text, with the text.",
    "prompts": "One row per prompt, with the text and metadata.",
    "summary": "The results table: win rate per policy × k × opponent, and f̂(k).",
    "pairs": "LLMdoctor's preference pairs (prompt, chosen, rejected, weight, source), importable in the admin.",
}


def header_and_rows(
    study: Study, table: str, *, origin: str | None = None, include_unreviewed: bool = False
) -> tuple[tuple[str, ...], Iterable[tuple]]:
    """The header and row generator of one table.

    origin ('real', 'simulated', 'all') filters judgments by annotator kind; by default the
    judgments table holds all of them (with an is_simulated column) and the summary, like the
    results page, real annotators only. include_unreviewed: the summary counts the judgments of
    participants rejected in review or ended for failed attention checks too (the judgments table
    always holds them, flagged in left_out_by_default).
    """
    if table == "judgments":
        return JUDGMENT_HEADER, iter_judgment_rows(study, origin=origin or "all")
    if table == "items":
        return ITEM_HEADER, iter_item_rows(study)
    if table == "candidates":
        return CANDIDATE_HEADER, iter_candidate_rows(study)
    if table == "prompts":
        return PROMPT_HEADER, iter_prompt_rows(study)
    if table == "summary":
        return summary_header(), iter_summary_rows(study, origin=origin or "real", include_unreviewed=include_unreviewed)
    if table == "pairs":
        return PAIR_HEADER, iter_pair_rows(study)
    raise ValueError(f"table must be one of {sorted(TABLES)}, got {table!r}")


def iter_csv(study: Study, table: str, *, origin: str | None = None, include_unreviewed: bool = False) -> Iterator[str]:
    """The table as CSV text, yielded in chunks of ROWS_PER_WRITE rows (header first)."""
    header, rows = header_and_rows(study, table, origin=origin, include_unreviewed=include_unreviewed)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= ROWS_PER_WRITE:
            writer.writerows(batch)
            batch.clear()
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    writer.writerows(batch)
    yield buffer.getvalue()


def filename(study: Study, table: str) -> str:
    return f"{study.slug}-{table}.csv"
