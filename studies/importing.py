"""Bulk import of prompts from CSV or JSONL: every row is checked, and nothing is saved unless all are good.

CSV: a header row with a `text` column; optional `external_id` and `metadata` (a JSON object)
columns; any other column goes into the prompt's metadata under its header.
JSONL: one JSON object per line with `text`, optional `external_id` and `metadata`; other keys go
into metadata. Blank lines are skipped in both formats.

Hostile files get a list of problems with line numbers, never a server error: the file is capped
in bytes (`UALIGN_MAX_UPLOAD_BYTES`) and rows (`UALIGN_IMPORT_MAX_ROWS`), CSV cells in length
(`UALIGN_IMPORT_MAX_FIELD_CHARS`); JSON refuses NaN and Infinity and bounds nesting
(`UALIGN_JSON_MAX_DEPTH`); NUL, lone surrogates and control characters other than tab and
newlines are refused anywhere (`studies.validation`). Only a draft study takes prompts
(`Study.design_fixed_message` says why another is refused). Files larger than
`UALIGN_IMPORT_BACKGROUND_BYTES` are imported by a worker (`studies.services.start_prompt_import`): the job checks
every row with progress on its row, then saves them in batches in one transaction.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from studies.models import Job, Prompt, Study
from studies.validation import JSONProblem, loads_strict, text_problem

MAX_EXTERNAL_ID: int = Prompt._meta.get_field("external_id").max_length or 0
MAX_ERRORS = 50  # problems listed before the check stops
SAVE_BATCH = 1000
PROGRESS_EVERY = 5000  # rows between progress reports
Progress = Callable[[float, str], None]


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


class TooManyProblems(Exception):
    """The check stopped early: MAX_ERRORS problems, or more rows than allowed."""


class ImportRejected(Exception):
    """A background import found problems; nothing was saved. The message lists them, one a line."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        head = f"Nothing was imported: {len(errors)} problem{'s' if len(errors) != 1 else ''} found."
        super().__init__("\n".join([head, *(str(e) for e in errors)]))


class _Rows:
    """Collects parsed rows and their errors, and keeps the caps."""

    def __init__(self, *, total_lines: int = 0, progress: Progress | None = None) -> None:
        self.rows: list[tuple[int, Prompt]] = []
        self.errors: list[RowError] = []
        self.max_rows = settings.UALIGN_IMPORT_MAX_ROWS
        self.max_chars = settings.UALIGN_IMPORT_MAX_FIELD_CHARS
        self.total_lines, self.progress = total_lines, progress
        self.seen = 0

    def fail(self, line: int, message: str) -> None:
        self.errors.append(RowError(line, message))
        if len(self.errors) >= MAX_ERRORS:
            self.errors.append(RowError(0, f"(stopped after {MAX_ERRORS} problems)"))
            raise TooManyProblems()

    def count(self, line: int) -> None:
        """One more non-blank row: enforce the row cap and report progress now and then."""
        self.seen += 1
        if self.seen > self.max_rows:
            self.errors.append(RowError(line, f"the file has more than {self.max_rows} prompts (the import limit)"))
            raise TooManyProblems()
        if self.progress and self.seen % PROGRESS_EVERY == 0:
            fraction = 0.9 * line / self.total_lines if self.total_lines else 0.0
            self.progress(fraction, f"Checked {self.seen} rows")

    def add(self, line: int, text: object, external_id: object, metadata: object) -> None:
        before = len(self.errors)
        if not isinstance(text, str) or not text.strip():
            self.fail(line, "text is missing or empty")
        elif len(text) > self.max_chars:
            self.fail(line, f"text is longer than {self.max_chars} characters")
        elif text_problem(text):
            self.fail(line, f"text {text_problem(text)}")
        key = ""
        if external_id is None:
            pass
        elif isinstance(external_id, int | str) and not isinstance(external_id, bool):
            key = str(external_id).strip()
            if len(key) > MAX_EXTERNAL_ID:
                self.fail(line, f"external_id is longer than {MAX_EXTERNAL_ID} characters")
            elif text_problem(key):
                self.fail(line, f"external_id {text_problem(key)}")
        else:
            self.fail(line, "external_id must be a string or an integer")
        if not isinstance(metadata, dict):
            self.fail(line, "metadata must be a JSON object")
        if len(self.errors) == before:
            assert isinstance(text, str)
            self.rows.append((line, Prompt(text=text.strip(), external_id=key, metadata=metadata)))


def _decode(data: bytes) -> str:
    text = data.decode("utf-8-sig")
    if "\x00" in text:
        raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
    return text


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL file: split at \n only (a \r before it is JSON whitespace).

    Not `str.splitlines()`, which also splits at U+2028, U+2029, U+0085 and other separators
    that a JSON string may hold as they are: a valid file would be cut inside a string.
    """
    return text.split("\n")


def _parse_jsonl(text: str, rows: _Rows) -> None:
    depth = settings.UALIGN_JSON_MAX_DEPTH
    for line_no, line in enumerate(jsonl_lines(text), start=1):
        if not line.strip():
            continue
        rows.count(line_no)
        try:
            obj = loads_strict(line, max_depth=depth)
        except JSONProblem as exc:
            rows.fail(line_no, str(exc))
            continue
        if not isinstance(obj, dict):
            rows.fail(line_no, "each line must be a JSON object")
            continue
        metadata = obj.pop("metadata", {})
        text_value, external_id = obj.pop("text", None), obj.pop("external_id", None)
        if isinstance(metadata, dict):
            metadata = {**obj, **metadata}
        rows.add(line_no, text_value, external_id, metadata)


def _csv_cell_problem(record: dict, limit: int) -> str | None:
    for key, value in record.items():
        for cell in (key, value):
            if isinstance(cell, str) and len(cell) > limit:
                return f"a cell is longer than {limit} characters"
            if isinstance(cell, str) and text_problem(cell):
                return f"a cell {text_problem(cell)}"
    return None


def _parse_csv(text: str, rows: _Rows) -> None:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fieldnames = reader.fieldnames
        if not fieldnames or "text" not in [name.strip() for name in fieldnames]:
            rows.fail(1, "the header row must have a 'text' column")
            return
        for record in reader:
            _parse_csv_record(reader.line_num, record, rows)
    except csv.Error as exc:
        rows.fail(reader.reader.line_num, f"malformed CSV ({exc})")


def _parse_csv_record(line_no: int, record: dict, rows: _Rows) -> None:
    if None in record:
        rows.fail(line_no, "more fields than the header has")
        return
    record = {(key or "").strip(): value for key, value in record.items()}
    if not any((value or "").strip() for value in record.values()):
        return
    rows.count(line_no)
    problem = _csv_cell_problem(record, rows.max_chars)
    if problem:
        rows.fail(line_no, problem)
        return
    metadata: object = {}
    raw_metadata = record.pop("metadata", "") or ""
    if raw_metadata.strip():
        try:
            metadata = loads_strict(raw_metadata, max_depth=settings.UALIGN_JSON_MAX_DEPTH)
        except JSONProblem as exc:
            rows.fail(line_no, f"metadata: {exc}")
            return
    text_value, external_id = record.pop("text"), record.pop("external_id", None)
    if isinstance(metadata, dict):
        metadata = {**{k: v for k, v in record.items() if v not in (None, "")}, **metadata}
    rows.add(line_no, text_value, external_id, metadata)


def _check_duplicates(study: Study, rows: _Rows) -> None:
    seen: dict[str, int] = {}
    for line_no, prompt in rows.rows:
        if not prompt.external_id:
            continue
        if prompt.external_id in seen:
            rows.fail(line_no, f"external_id {prompt.external_id!r} repeats line {seen[prompt.external_id]}")
        seen.setdefault(prompt.external_id, line_no)
    ids = list(seen)
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        existing = Prompt.objects.filter(study=study, external_id__in=chunk).values_list("external_id", flat=True)
        for external_id in sorted(existing):
            rows.fail(seen[external_id], f"external_id {external_id!r} is already in this study")


def check_prompts(*, study: Study, filename: str, data: bytes, progress: Progress | None = None) -> _Rows:
    """Parse and check every row of `data`; the rows, and the problems (empty when all are good)."""
    rows = _Rows(progress=progress)
    fixed = study.design_fixed_message()
    if fixed:  # prompts are part of the design: only a draft takes new ones
        rows.errors.append(RowError(0, fixed))
        return rows
    limit = settings.UALIGN_MAX_UPLOAD_BYTES
    if len(data) > limit:
        rows.errors.append(RowError(0, f"the file is larger than {limit // 1024 // 1024} MB"))
        return rows
    try:
        text = _decode(data)
    except UnicodeDecodeError:
        rows.errors.append(RowError(0, "the file is not UTF-8 text"))
        return rows
    rows.total_lines = text.count("\n") + 1
    name = filename.lower()
    try:
        if name.endswith((".jsonl", ".ndjson")):
            _parse_jsonl(text, rows)
        elif name.endswith(".csv"):
            _parse_csv(text, rows)
        else:
            rows.errors.append(RowError(0, "the file must end in .csv or .jsonl"))
            return rows
        if not rows.rows and not rows.errors:
            rows.errors.append(RowError(0, "the file has no prompts"))
        _check_duplicates(study, rows)
    except TooManyProblems:
        pass
    rows.errors.sort(key=lambda e: (e.message.startswith("(stopped"), e.line))
    return rows


def _save(study: Study, rows: _Rows, *, job: Job | None = None) -> ImportReport:
    """Save every checked row in batches, in one transaction (with the job's completion, if any)."""
    prompts = [prompt for _, prompt in rows.rows]
    for prompt in prompts:
        prompt.study = study
    try:
        with transaction.atomic():
            fixed = Study.objects.select_for_update().get(pk=study.pk).design_fixed_message()
            if fixed:  # it left draft while the rows were checked
                return ImportReport(errors=[RowError(0, fixed)])
            if job is not None and not job_still_ours(job):
                raise AlreadyImported(job)
            Prompt.objects.bulk_create(prompts, batch_size=SAVE_BATCH)
            if job is not None:  # done in the same commit: a redelivered task can't import twice
                Job.objects.filter(pk=job.pk).update(
                    status=Job.Status.DONE, progress=1.0, result={"created": len(prompts)},
                    finished_at=timezone.now(), payload=None,
                )
    except IntegrityError:
        # Another import added one of these external ids meanwhile.
        return ImportReport(errors=[RowError(0, "an external_id was added meanwhile; nothing was saved, try again")])
    return ImportReport(created=len(prompts))


class AlreadyImported(Exception):
    """Another run of the same import job finished it meanwhile; this run saves nothing."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.pk} was finished by another run")


def job_still_ours(job: Job) -> bool:
    """Lock the job's row and say whether it is still running (inside the saving transaction).

    Two runs of one job can overlap when a worker that seemed dead (no heartbeat) was only slow
    and its job was reclaimed: the first to commit marks it done in the same transaction as its
    rows, and the second finds it finished here and saves nothing.
    """
    return Job.objects.select_for_update().filter(pk=job.pk, status=Job.Status.RUNNING).exists()


def finished_result(job: Job) -> dict:
    """What the run that finished the job recorded, for a run that found it finished."""
    return Job.objects.filter(pk=job.pk).values_list("result", flat=True).get() or {}


def import_prompts(*, study: Study, filename: str, data: bytes) -> ImportReport:
    """Parse `data` (CSV or JSONL, chosen by the file name) and create the study's prompts.

    Returns a report; when it has errors, nothing was saved.
    """
    rows = check_prompts(study=study, filename=filename, data=data)
    if rows.errors:
        return ImportReport(errors=rows.errors)
    return _save(study, rows)


def run_import_job(job: Job) -> dict:
    """The worker's side of `start_prompt_import`: check with progress, then save all or nothing.

    Raises ImportRejected (nothing saved) when any row is bad.
    """
    study = job.study
    assert study is not None  # an import job always belongs to a study
    data = bytes(Job.objects.filter(pk=job.pk).values_list("payload", flat=True).get() or b"")
    rows = check_prompts(study=study, filename=job.params.get("filename", ""), data=data,
                         progress=job.report_progress)
    if rows.errors:
        Job.objects.filter(pk=job.pk).update(payload=None)
        raise ImportRejected(rows.errors)
    job.report_progress(0.9, f"Saving {len(rows.rows)} prompts")
    try:
        report = _save(study, rows, job=job)
    except AlreadyImported:
        return finished_result(job)
    if report.errors:
        raise ImportRejected(report.errors)
    return {"created": report.created}
