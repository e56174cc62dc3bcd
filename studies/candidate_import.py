"""Bring your own candidates: import prompts' candidate pools generated outside ualign.

A study whose every prompt has imported candidates prepares without a generator: the pool step
has nothing to sample, and populations, fits and items run on the imported pool as usual (its
counts are the reference μ). Two formats, with the same fields:

- JSONL, one object per line: `external_id` (required), `prompt` (its text; required for a
  prompt the study doesn't have yet), and either `candidates`, a list of texts or of objects
  `{"text": …, "count": 3, "source": "my-model"}`, or one candidate as `candidate`, `count`,
  `source` (the CSV's columns).
- CSV, a header row and one candidate a row: `external_id,prompt,candidate[,count][,source]`.

Prompts are created, or matched by external id (a given prompt text must then be the stored
one). Identical texts of one prompt are merged, their counts added, as a generated pool merges
identical samples. Every row is checked like the prompt import (`studies.importing`: sizes and
row caps, strict JSON, no NUL or control characters) and nothing is saved when any row is bad.
Only a draft study without a generator takes imported candidates, and a prompt takes one pool:
a prompt that already has candidates is refused.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from studies.importing import (
    MAX_ERRORS,
    MAX_EXTERNAL_ID,
    PROGRESS_EVERY,
    AlreadyImported,
    ImportRejected,
    Progress,
    RowError,
    TooManyProblems,
    finished_result,
    job_still_ours,
    jsonl_lines,
)
from studies.models import Candidate, Job, Prompt, Study
from studies.validation import JSONProblem, loads_strict, text_problem

MAX_COUNT = 1_000_000  # a candidate's count (how many samples gave it)
MAX_SOURCE = 100  # characters of a source label
CSV_COLUMNS = ("external_id", "prompt", "candidate", "count", "source")

FORMAT_HELP = (
    "JSONL: one object per line with external_id, prompt (the prompt's text) and candidates (a list of "
    'texts, or of {"text": …, "count": 3, "source": "my-model"}). CSV: a header row '
    "external_id,prompt,candidate[,count][,source] and one candidate a row. Counts default to 1."
)


@dataclass
class PoolDraft:
    """One prompt's pool as read: its text (or "" to match), and text → [count, sources]."""

    external_id: str
    prompt_text: str
    line: int
    texts: dict[str, list] = field(default_factory=dict)  # text → [count, set of source labels]


@dataclass
class CandidateImportReport:
    prompts_created: int = 0
    prompts_matched: int = 0
    candidates: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_result(self) -> dict[str, int]:
        """The job's record of a background import."""
        return {"prompts_created": self.prompts_created, "prompts_matched": self.prompts_matched,
                "candidates": self.candidates}


def max_candidates_per_prompt() -> int:
    return settings.UALIGN_IMPORT_MAX_CANDIDATES


class _Pools:
    """Collects pools and errors, keeps the caps."""

    def __init__(self, progress: Progress | None = None, total_lines: int = 0) -> None:
        self.pools: dict[str, PoolDraft] = {}
        self.errors: list[RowError] = []
        self.rows = 0
        self.progress, self.total_lines = progress, total_lines

    def fail(self, line: int, message: str) -> None:
        self.errors.append(RowError(line, message))
        if len(self.errors) >= MAX_ERRORS:
            self.errors.append(RowError(0, f"(stopped after {MAX_ERRORS} problems)"))
            raise TooManyProblems()

    def add(self, line: int, external_id: object, prompt: object, text: object, count: object, source: object) -> None:
        self.rows += 1
        if self.progress and self.rows % PROGRESS_EVERY == 0:
            self.progress(0.8 * line / max(self.total_lines, 1), f"Checked {self.rows} candidates")
        if self.rows > settings.UALIGN_IMPORT_MAX_ROWS:
            self.errors.append(RowError(line, f"the file has more than {settings.UALIGN_IMPORT_MAX_ROWS} candidates "
                                              "(the import limit)"))
            raise TooManyProblems()
        problems = [p for p in (_key_problem(external_id), _text_field("prompt", prompt, required=False),
                                _text_field("candidate text", text, required=True), _count_problem(count),
                                _source_problem(source)) if p]
        if problems:
            for problem in problems:
                self.fail(line, problem)
            return
        self._merge(line, str(external_id).strip(), str(prompt or "").strip(), str(text).strip(),
                    1 if count in (None, "") else int(str(count)), str(source or "").strip())

    def _merge(self, line: int, key: str, prompt: str, text: str, count: int, source: str) -> None:
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = PoolDraft(key, prompt, line)
        elif prompt and pool.prompt_text and prompt != pool.prompt_text:
            self.fail(line, f"external_id {key!r} has another prompt text on line {pool.line}")
            return
        pool.prompt_text = pool.prompt_text or prompt
        entry = pool.texts.setdefault(text, [0, set()])
        entry[0] += count
        if source:
            entry[1].add(source)
        if len(pool.texts) > max_candidates_per_prompt():
            self.fail(line, f"external_id {key!r} has more than {max_candidates_per_prompt()} distinct candidates")


def _key_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        return "external_id is missing (a string or an integer)"
    key = str(value).strip()
    if len(key) > MAX_EXTERNAL_ID:
        return f"external_id is longer than {MAX_EXTERNAL_ID} characters"
    return f"external_id {text_problem(key)}" if text_problem(key) else None


def _text_field(name: str, value: object, *, required: bool) -> str | None:
    if value is None or value == "":
        return f"{name} is missing or empty" if required else None
    if not isinstance(value, str) or (required and not value.strip()):
        return f"{name} must be a non-empty string"
    if len(value) > settings.UALIGN_IMPORT_MAX_FIELD_CHARS:
        return f"{name} is longer than {settings.UALIGN_IMPORT_MAX_FIELD_CHARS} characters"
    return f"{name} {text_problem(value)}" if text_problem(value) else None


def _count_problem(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 7:
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        return f"count must be a whole number from 1 to {MAX_COUNT}"
    return None


def _source_problem(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_SOURCE:
        return f"source must be a label of at most {MAX_SOURCE} characters"
    return f"source {text_problem(value)}" if text_problem(value) else None


# --------------------------------------------------------------------------------------------
# Parsing


def _parse_jsonl(text: str, pools: _Pools) -> None:
    for line_no, line in enumerate(jsonl_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = loads_strict(line, max_depth=settings.UALIGN_JSON_MAX_DEPTH)
        except JSONProblem as exc:
            pools.fail(line_no, str(exc))
            continue
        if not isinstance(obj, dict):
            pools.fail(line_no, "each line must be a JSON object")
            continue
        key, prompt = obj.get("external_id"), obj.get("prompt")
        if "candidates" not in obj:
            pools.add(line_no, key, prompt, obj.get("candidate"), obj.get("count"), obj.get("source"))
            continue
        candidates = obj["candidates"]
        if not isinstance(candidates, list) or not candidates:
            pools.fail(line_no, "candidates must be a non-empty list")
            continue
        for entry in candidates:
            if isinstance(entry, dict):
                pools.add(line_no, key, prompt, entry.get("text"), entry.get("count"), entry.get("source"))
            else:
                pools.add(line_no, key, prompt, entry, None, None)


def _parse_csv(text: str, pools: _Pools) -> None:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        columns = [c.strip().lower() for c in header or []]
        missing = [c for c in ("external_id", "candidate") if c not in columns]
        unknown = [c for c in columns if c not in CSV_COLUMNS]
        if missing or unknown or len(set(columns)) != len(columns):
            pools.fail(1, f"the header must name the columns {', '.join(CSV_COLUMNS)} (external_id and candidate "
                          "required, each once)")
            return
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                pools.fail(reader.line_num, f"{len(row)} fields where the header has {len(columns)}")
                continue
            if any(len(cell) > settings.UALIGN_IMPORT_MAX_FIELD_CHARS for cell in row):
                pools.fail(reader.line_num, f"a cell is longer than {settings.UALIGN_IMPORT_MAX_FIELD_CHARS} characters")
                continue
            record = dict(zip(columns, row, strict=True))
            pools.add(reader.line_num, record["external_id"], record.get("prompt"), record["candidate"],
                      record.get("count"), record.get("source"))
    except csv.Error as exc:
        pools.fail(reader.line_num, f"malformed CSV ({exc})")


# --------------------------------------------------------------------------------------------
# Checking against the study, and saving


def study_problems(study: Study) -> list[str]:
    """Why the study can't take imported candidates now (empty when it can)."""
    if study.status != Study.Status.DRAFT:
        return [f"“{study}” is {study.get_status_display().lower()}: candidates can only be imported into a draft study."]
    if study.generator_id is not None:
        return [f"“{study}” samples its pool with the generator “{study.generator}”: clear the study's generator "
                "to use imported candidates instead."]
    return []


def _check_against_study(study: Study, pools: _Pools) -> dict[str, Prompt]:
    """The study's prompts that the file names, refusing rows that contradict them."""
    existing = {p.external_id: p for p in Prompt.objects.filter(study=study, external_id__in=list(pools.pools))}
    with_candidates = set(
        Candidate.objects.filter(prompt__in=existing.values(), is_attention_check=False)
        .values_list("prompt__external_id", flat=True)
    )
    for key, pool in pools.pools.items():
        prompt = existing.get(key)
        if prompt is None and not pool.prompt_text:
            pools.fail(pool.line, f"external_id {key!r} is not in the study: give its prompt text")
        elif prompt is not None and pool.prompt_text and pool.prompt_text != prompt.text:
            pools.fail(pool.line, f"external_id {key!r} is already in this study with another prompt text")
        elif key in with_candidates:
            pools.fail(pool.line, f"prompt {key!r} already has candidates")
    return existing


def check_candidates(*, study: Study, filename: str, data: bytes,
                     progress: Progress | None = None) -> tuple[_Pools, dict[str, Prompt]]:
    """Parse and check every row; the pools, the prompts they match, and the problems in `pools.errors`."""
    pools = _Pools(progress, data.count(b"\n") + 1)
    existing: dict[str, Prompt] = {}
    pools.errors += [RowError(0, p) for p in study_problems(study)]
    if len(data) > settings.UALIGN_MAX_UPLOAD_BYTES:
        pools.errors.append(RowError(0, f"the file is larger than {settings.UALIGN_MAX_UPLOAD_BYTES // 2**20} MB"))
    if pools.errors:
        return pools, existing
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pools.errors.append(RowError(0, "the file is not UTF-8 text"))
        return pools, existing
    name = filename.lower()
    try:
        if "\x00" in text:
            pools.fail(0, "the file contains a NUL character")
        elif name.endswith((".jsonl", ".ndjson")):
            _parse_jsonl(text, pools)
        elif name.endswith(".csv"):
            _parse_csv(text, pools)
        else:
            pools.fail(0, "the file must end in .csv or .jsonl")
        if not pools.pools and not pools.errors:
            pools.fail(0, "the file has no candidates")
        if not pools.errors:
            existing = _check_against_study(study, pools)
    except TooManyProblems:
        pass
    pools.errors.sort(key=lambda e: (e.message.startswith("(stopped"), e.line))
    return pools, existing


def import_candidates(*, study: Study, filename: str, data: bytes) -> CandidateImportReport:
    """Check `data` (CSV or JSONL, by the file name) and save its prompts and candidates, all or none."""
    pools, existing = check_candidates(study=study, filename=filename, data=data)
    if pools.errors:
        return CandidateImportReport(errors=pools.errors)
    return _save_checked(study, pools, existing, filename)


def _save_checked(study: Study, pools: _Pools, existing: dict[str, Prompt], filename: str,
                  job: Job | None = None) -> CandidateImportReport:
    """Save checked pools in one transaction, with the job's completion when a worker runs it
    (so a redelivered job can't save twice: `studies.importing.job_still_ours`)."""
    try:
        with transaction.atomic():
            study = Study.objects.select_for_update().get(pk=study.pk)
            if study_problems(study):  # changed since the check
                return CandidateImportReport(errors=[RowError(0, p) for p in study_problems(study)])
            if job is not None and not job_still_ours(job):
                raise AlreadyImported(job)
            report = _save(study, pools, existing, filename)
            if job is not None:
                Job.objects.filter(pk=job.pk).update(
                    status=Job.Status.DONE, progress=1.0, result=report.as_result(), finished_at=timezone.now(),
                    payload=None,
                )
            return report
    except IntegrityError:
        return CandidateImportReport(errors=[RowError(0, "the study's prompts changed meanwhile; nothing was saved, "
                                                         "try again")])


def _save(study: Study, pools: _Pools, existing: dict[str, Prompt], filename: str) -> CandidateImportReport:
    report = CandidateImportReport(prompts_matched=len(existing))
    new = [Prompt(study=study, text=p.prompt_text, external_id=key) for key, p in pools.pools.items() if key not in existing]
    Prompt.objects.bulk_create(new)
    report.prompts_created = len(new)
    prompts = {**existing, **{p.external_id: p for p in new}}
    rows = []
    for key, pool in pools.pools.items():
        for index, (text, (count, sources)) in enumerate(pool.texts.items()):
            rows.append(Candidate(
                prompt=prompts[key], generator=None, sample_index=index, text=text,
                text_sha256=Candidate.hash_text(text), multiplicity=count,
                metadata={"imported_from": filename[:200], "sources": sorted(sources)},
            ))
    Candidate.objects.bulk_create(rows, batch_size=1000)
    report.candidates = len(rows)
    return report


def run_import_job(job: Job) -> dict:
    """The worker's side of `studies.services.start_candidate_import`: check every row with
    progress on the job's row, then save all or nothing. Raises ImportRejected when any row is bad."""
    study = job.study
    assert study is not None  # an import job always belongs to a study
    data = bytes(Job.objects.filter(pk=job.pk).values_list("payload", flat=True).get() or b"")
    job.report_progress(0.0, "Checking the rows")
    pools, existing = check_candidates(study=study, filename=job.params.get("filename", ""), data=data,
                                       progress=job.report_progress)
    if pools.errors:
        Job.objects.filter(pk=job.pk).update(payload=None)
        raise ImportRejected(pools.errors)
    job.report_progress(0.9, f"Saving the candidates of {len(pools.pools)} prompts")
    try:
        report = _save_checked(study, pools, existing, job.params.get("filename", ""), job=job)
    except AlreadyImported:
        return finished_result(job)
    if report.errors:
        Job.objects.filter(pk=job.pk).update(payload=None)
        raise ImportRejected(report.errors)
    return report.as_result()


def imported_candidates(study: Study):
    """The study's imported candidates (no generator, not attention checks)."""
    return Candidate.objects.filter(prompt__study=study, generator__isnull=True, is_attention_check=False)
