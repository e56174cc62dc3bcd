"""The picks as training data: preference pairs in the shape TRL's DPO trainer reads.

TRL's `DPOTrainer` takes a dataset with the columns `prompt`, `chosen` and `rejected` (plain text,
the "standard" format). A pick among the shown texts says the chosen text was preferred to each
text it was shown beside, so every judgment gives one row per (chosen, not chosen) pair: a pick
among 3 distinct texts gives 2 rows. Extra columns say where the pair came from, so a trainer
can weight or filter: `item_id`, `judgment_id`, `annotator` (the participant's pseudonym, never
the access token), `credit` (the policy's share of the pick, theory.md §1), `policy`, `k`,
`opponent`, `prompt_id`, `chosen_candidate_id`, `rejected_candidate_id`, `is_simulated`.

Left out: attention checks (a deliberately broken text is not a preference), "can't decide"
(no text was preferred) and items decided by construction (never judged). Texts are written as
they are: this is training data read by a program, not a sheet opened in a spreadsheet, so the
CSV exports' formula guard (`studies.text.safe_text`) would corrupt it.

Two files: JSON Lines (one object per line, UTF-8) and Parquet (pyarrow, imported inside
`write_parquet` so that only the export loads it). Both are read by `datasets.load_dataset("json"
| "parquet", data_files=...)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from studies.estimate.results import judgments_for
from studies.models import ItemCandidate, Study

FORMATS = {"jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}
COLUMNS = (
    "prompt", "chosen", "rejected", "item_id", "judgment_id", "annotator", "credit", "policy", "k", "opponent",
    "prompt_id", "chosen_candidate_id", "rejected_candidate_id", "is_simulated",
)  # fmt: skip
CHUNK_SIZE = 2000


def _shown_texts(study: Study) -> dict[int, list[tuple[int, int, str]]]:
    """Item id → [(shown-text id, candidate id, text)] of its shown texts, for the study's judged items."""
    shown: dict[int, list[tuple[int, int, str]]] = {}
    rows = (
        ItemCandidate.objects.filter(item__study=study, item__is_attention_check=False, item__needs_judgment=True)
        .order_by("item_id", "slot")
        .values_list("item_id", "id", "candidate_id", "candidate__text")
    )
    for item_id, pk, candidate_id, text in rows.iterator(chunk_size=CHUNK_SIZE):
        shown.setdefault(item_id, []).append((pk, candidate_id, text))
    return shown


def iter_pairs(study: Study, *, origin: str = "real") -> Iterator[dict[str, Any]]:
    """One dict per (chosen, not chosen) pair of every analysed pick, in judgment order."""
    shown = _shown_texts(study)
    rows = (
        judgments_for(study, origin)
        .filter(assignment__item__is_attention_check=False, cant_decide=False, chosen__isnull=False)
        .order_by("id")
        .values_list("id", "assignment__item_id", "assignment__item__prompt_id", "assignment__item__prompt__text",
                     "chosen_id", "credit", "assignment__item__policy__name", "assignment__item__k",
                     "assignment__item__opponent_label", "assignment__participant__pseudonym",
                     "assignment__participant__is_simulated")
    )
    for (pk, item_id, prompt_id, prompt, chosen_id, credit, policy, k, opponent, pseudonym,
         simulated) in rows.iterator(chunk_size=CHUNK_SIZE):  # fmt: skip
        texts = shown.get(item_id, [])
        chosen = next((t for t in texts if t[0] == chosen_id), None)
        if chosen is None:
            continue
        for other in texts:
            if other[0] == chosen_id:
                continue
            yield {
                "prompt": prompt, "chosen": chosen[2], "rejected": other[2], "item_id": item_id, "judgment_id": pk,
                "annotator": pseudonym, "credit": credit, "policy": policy, "k": k, "opponent": opponent,
                "prompt_id": prompt_id, "chosen_candidate_id": chosen[1], "rejected_candidate_id": other[1],
                "is_simulated": simulated,
            }  # fmt: skip


def iter_jsonl(study: Study, *, origin: str = "real") -> Iterator[str]:
    """The pairs as JSON Lines, a line at a time (UTF-8, no ASCII escaping)."""
    for row in iter_pairs(study, origin=origin):
        yield json.dumps(row, ensure_ascii=False) + "\n"


def write_parquet(study: Study, out: IO[bytes], *, origin: str = "real") -> None:
    """The pairs as one Parquet table (columns `COLUMNS`, typed), written to `out`."""
    import pyarrow as pa  # type: ignore[import-untyped]  # loaded only by this export
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    schema = pa.schema([
        ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()), ("item_id", pa.int64()),
        ("judgment_id", pa.int64()), ("annotator", pa.string()), ("credit", pa.float64()), ("policy", pa.string()),
        ("k", pa.int64()), ("opponent", pa.string()), ("prompt_id", pa.int64()), ("chosen_candidate_id", pa.int64()),
        ("rejected_candidate_id", pa.int64()), ("is_simulated", pa.bool_()),
    ])  # fmt: skip
    rows = list(iter_pairs(study, origin=origin))
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, out)


def filename(study: Study, fmt: str, origin: str) -> str:
    return f"{study.slug}-preference-pairs-{origin}.{fmt}"
