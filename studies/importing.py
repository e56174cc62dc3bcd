"""Bulk import of prompts from CSV or JSONL: every row is checked, and nothing is saved unless all are good.

CSV: a header row with a `text` column; optional `external_id` and `metadata` (a JSON object)
columns; any other column goes into the prompt's metadata under its header.
JSONL: one JSON object per line with `text`, optional `external_id` and `metadata`; other keys go
into metadata. Blank lines are skipped in both formats.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction

from studies.models import Prompt, Study

MAX_EXTERNAL_ID: int = Prompt._meta.get_field("external_id").max_length or 0


@dataclass
class RowError:
    line: int  # 1-based line in the file; 0 for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class ImportReport:
    created: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class _Rows:
    """Collects parsed rows and their errors."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, Prompt]] = []
        self.errors: list[RowError] = []

    def add(self, line: int, text: object, external_id: object, metadata: object) -> None:
        before = len(self.errors)
        if not isinstance(text, str) or not text.strip():
            self.errors.append(RowError(line, "text is missing or empty"))
        key = ""
        if external_id is None:
            pass
        elif isinstance(external_id, int | str) and not isinstance(external_id, bool):
            key = str(external_id).strip()
            if len(key) > MAX_EXTERNAL_ID:
                self.errors.append(RowError(line, f"external_id is longer than {MAX_EXTERNAL_ID} characters"))
        else:
            self.errors.append(RowError(line, "external_id must be a string or an integer"))
        if not isinstance(metadata, dict):
            self.errors.append(RowError(line, "metadata must be a JSON object"))
        if len(self.errors) == before:
            assert isinstance(text, str)
            self.rows.append((line, Prompt(text=text.strip(), external_id=key, metadata=metadata)))


def _decode(data: bytes) -> str:
    text = data.decode("utf-8-sig")
    if "\x00" in text:
        raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
    return text


def _parse_jsonl(text: str, rows: _Rows) -> None:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.errors.append(RowError(line_no, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            rows.errors.append(RowError(line_no, "each line must be a JSON object"))
            continue
        metadata = obj.pop("metadata", {})
        text_value, external_id = obj.pop("text", None), obj.pop("external_id", None)
        if isinstance(metadata, dict):
            metadata = {**obj, **metadata}
        rows.add(line_no, text_value, external_id, metadata)


def _parse_csv(text: str, rows: _Rows) -> None:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "text" not in [name.strip() for name in reader.fieldnames]:
        rows.errors.append(RowError(1, "the header row must have a 'text' column"))
        return
    try:
        for record in reader:
            line_no = reader.line_num
            if None in record:
                rows.errors.append(RowError(line_no, "more fields than the header has"))
                continue
            record = {(key or "").strip(): value for key, value in record.items()}
            if not any((value or "").strip() for value in record.values()):
                continue
            metadata: object = {}
            raw_metadata = record.pop("metadata", "") or ""
            if raw_metadata.strip():
                try:
                    metadata = json.loads(raw_metadata)
                except json.JSONDecodeError as exc:
                    rows.errors.append(RowError(line_no, f"metadata is not valid JSON ({exc.msg})"))
                    continue
            text_value, external_id = record.pop("text"), record.pop("external_id", None)
            if isinstance(metadata, dict):
                metadata = {**{k: v for k, v in record.items() if v not in (None, "")}, **metadata}
            rows.add(line_no, text_value, external_id, metadata)
    except csv.Error as exc:
        rows.errors.append(RowError(reader.line_num, f"malformed CSV ({exc})"))


def _check_duplicates(study: Study, rows: _Rows) -> None:
    seen: dict[str, int] = {}
    for line_no, prompt in rows.rows:
        if not prompt.external_id:
            continue
        if prompt.external_id in seen:
            rows.errors.append(
                RowError(line_no, f"external_id {prompt.external_id!r} repeats line {seen[prompt.external_id]}")
            )
        seen.setdefault(prompt.external_id, line_no)
    existing = set(
        Prompt.objects.filter(study=study, external_id__in=list(seen)).values_list("external_id", flat=True)
    )
    for external_id in sorted(existing):
        rows.errors.append(RowError(seen[external_id], f"external_id {external_id!r} is already in this study"))


def import_prompts(*, study: Study, filename: str, data: bytes) -> ImportReport:
    """Parse `data` (CSV or JSONL, chosen by the file name) and create the study's prompts.

    Returns a report; when it has errors, nothing was saved.
    """
    limit = settings.UALIGN_MAX_UPLOAD_BYTES
    if len(data) > limit:
        return ImportReport(errors=[RowError(0, f"the file is larger than {limit // 1024 // 1024} MB")])
    try:
        text = _decode(data)
    except UnicodeDecodeError:
        return ImportReport(errors=[RowError(0, "the file is not UTF-8 text")])
    rows = _Rows()
    name = filename.lower()
    if name.endswith((".jsonl", ".ndjson")):
        _parse_jsonl(text, rows)
    elif name.endswith(".csv"):
        _parse_csv(text, rows)
    else:
        return ImportReport(errors=[RowError(0, "the file must end in .csv or .jsonl")])
    if not rows.rows and not rows.errors:
        rows.errors.append(RowError(0, "the file has no prompts"))
    _check_duplicates(study, rows)
    if rows.errors:
        return ImportReport(errors=sorted(rows.errors, key=lambda e: e.line))
    prompts = [prompt for _, prompt in rows.rows]
    for prompt in prompts:
        prompt.study = study
    try:
        with transaction.atomic():
            Prompt.objects.bulk_create(prompts)
    except IntegrityError:
        # Another import added one of these external ids meanwhile.
        return ImportReport(errors=[RowError(0, "an external_id was added meanwhile; nothing was saved, try again")])
    return ImportReport(created=len(prompts))
