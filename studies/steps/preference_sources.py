"""Preference sources, the population step's inputs: what each kind's params mean, how they are
checked, how an uploaded utilities CSV is resolved against the study's candidates, how a source
is run on one prompt.

Each `PreferenceSource` of a study gives user types to every prompt's population
(`studies.steps.population`, `workers.populations`); its `weight` is its share of the
population, split among its types by their own weights (default equal). The checks here are
the rules for one source; `studies.services.preparation_problems` is where a study's whole
setup is checked before Prepare, and the admin's form uses them field by field.

params per kind (a JSON object; `KIND_DOCS` below is the one spelling that the admin's help, its
kinds page and the checks read):

persona_judge  {"personas": ["A retired teacher who …", …], optional "model" (default the shipped
               "smollm2-135m-instruct"), "labels", "weights" (one per persona), "batch_size",
               "system_template" (with {persona}), "question_template" (with {prompt} and {response})}
               A causal LM asked, as each persona, whether the answer is good: log P(yes) − log P(no).
embedding      {"personas": [...], optional "model" (default the shipped "all-minilm-l6-v2"),
               "labels", "weights", "batch_size"}: cosine similarity of response and persona.
reward_model   {"models": ["<HF id or local folder>", …]} (or "model": one), optional "labels",
               "weights", "batch_size": one type per sequence-classification reward model.
csv            the utilities go in the source's data field (format: CSV_HELP), naming candidates
               by id; checked against the study's candidates (`csv_problems`); params unused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable
from dataclasses import dataclass
from typing import cast

from django.urls import reverse
from django.utils.html import format_html, format_html_join

from studies.models import Candidate, PreferenceSource, Prompt, Study
from studies.text import safe_text
from workers import generation, populations
from workers.populations import CandidateColumn, SourceUtilities, UtilitiesCSVError

DEFAULT_JUDGE_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"

CSV_HELP = (
    "Columns type,candidate_id,utility (optional weight): one row per user type and candidate, "
    "higher utility preferred. candidate_id is the candidate's id, as in the candidates CSV (the study's "
    "CSV links, or manage.py export_study <slug> --table candidates) and the admin's candidate list; "
    "each prompt follows from its candidates. Every type that scores a prompt scores all its candidates "
    "(attention checks excluded: they are in no population), and every prompt with candidates is scored. "
    "weight is the type's weight (equal without the column). The candidates export's other columns may "
    "stay: study, prompt_id, prompt_external_id, text_sha256 (and prompt: external or numeric id) are "
    "checked against each candidate, the rest ignored. "
    "Before the candidates exist, leave this empty: Prepare generates them and stops, asking for this file."
)

# Columns a utilities CSV may carry to check that each candidate id is the candidate meant
# (the candidates export's names); every cell given must fit the candidate.
CHECK_COLUMNS = ("study", "prompt", "prompt_id", "prompt_external_id", "text_sha256")
# The candidates export's other columns, accepted and not read, so that export plus type and
# utility columns uploads as it is.
IGNORED_COLUMNS = ("generator", "sample_index", "multiplicity", "token_count", "is_attention_check", "text")



@dataclass(frozen=True)
class ParamDoc:
    name: str
    meaning: str
    required: bool = False


@dataclass(frozen=True)
class KindDoc:
    """What one kind of source does, its params and an example: the one source of truth for the
    admin form's help, the kinds page and the params the checks accept (`_ALLOWED`)."""

    kind: str
    summary: str
    params: tuple[ParamDoc, ...]
    example: dict

    @property
    def example_json(self) -> str:
        return json.dumps(self.example, ensure_ascii=False)


_LABELS = ParamDoc("labels", "A name per type, shown in the population and the exports (default numbered).")
_WEIGHTS = ParamDoc("weights", "A non-negative weight per type, its share of this source (default equal).")
_BATCH = ParamDoc("batch_size", "How many responses a model scores at once (a positive integer).")

KIND_DOCS: tuple[KindDoc, ...] = (
    KindDoc(PreferenceSource.Kind.PERSONA_JUDGE,
            "A chat model asked, as each persona, whether the response is good: the utility is "
            "log P(yes) − log P(no). One type per persona.",
            (ParamDoc("personas", "A list of persona descriptions, one type each.", required=True),
             ParamDoc("model", f"A model id, local folder or shipped model name (default “{DEFAULT_JUDGE_MODEL}”)."),
             _LABELS, _WEIGHTS, _BATCH,
             ParamDoc("system_template", "The system message, containing {persona}."),
             ParamDoc("question_template", "The question, containing {prompt} and {response}.")),
            {"personas": ["A retired teacher who values clear, simple answers.",
                          "A software engineer who wants precise, complete answers."],
             "labels": ["teacher", "engineer"], "weights": [1, 1]}),
    KindDoc(PreferenceSource.Kind.EMBEDDING,
            "Cosine similarity between each response and each persona description under a sentence "
            "embedder. One type per persona.",
            (ParamDoc("personas", "A list of persona descriptions, one type each.", required=True),
             ParamDoc("model", f"A sentence-embedding model id, folder or shipped name (default “{DEFAULT_EMBEDDER}”)."),
             _LABELS, _WEIGHTS, _BATCH),
            {"personas": ["Someone who likes short, cheerful answers.", "Someone who wants every detail."]}),
    KindDoc(PreferenceSource.Kind.REWARD_MODEL,
            "Sequence-classification reward models score each (prompt, response): one type per model.",
            (ParamDoc("models", "A list of reward model ids (Hugging Face) or local folders.", required=True),
             ParamDoc("model", "One reward model, instead of \"models\"."),
             _LABELS, _WEIGHTS, _BATCH),
            {"models": ["OpenAssistant/reward-model-deberta-v3-large-v2"], "labels": ["oasst"]}),
    KindDoc(PreferenceSource.Kind.CSV,
            "Utilities you upload (the data field, or a file), keyed by candidate id: " + CSV_HELP,
            (), {}),
)

_ALLOWED: dict[str, set[str]] = {doc.kind: {p.name for p in doc.params} for doc in KIND_DOCS}


def params_help_html() -> str:
    """The admin form's help for params: per kind its params and an example (escaped HTML)."""
    items = format_html_join(
        "", "<li><strong>{}</strong>: {} Params: {}. Example: <code>{}</code></li>",
        ((doc.kind, doc.summary.split(": " + CSV_HELP)[0],
          ", ".join(p.name + (" (required)" if p.required else "") for p in doc.params) or "none",
          doc.example_json) for doc in KIND_DOCS),
    )
    return format_html('A JSON object whose keys depend on the kind (<a href="{}">every parameter explained</a>):'
                       '<ul class="source-kinds">{}</ul>', reverse("admin:studies_preference_source_kinds"), items)


def _is_text_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)


def source_params_problems(kind: str, params: object) -> list[str]:
    """Readable problems with a source's params for its kind; [] if valid (CSV data: `csv_problems`)."""
    if kind not in _ALLOWED:
        return [f"Unknown kind {kind!r}."]
    if not isinstance(params, dict):
        return ["params must be a JSON object."]
    problems = []
    unknown = sorted(set(params) - _ALLOWED[kind])
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED[kind])) or "none"
        problems.append(f"Unknown params {', '.join(unknown)} (allowed: {allowed}).")
    n_types = None
    if kind in (PreferenceSource.Kind.PERSONA_JUDGE, PreferenceSource.Kind.EMBEDDING):
        if not _is_text_list(params.get("personas")):
            problems.append('"personas" must be a non-empty list of persona descriptions.')
        else:
            n_types = len(params["personas"])
    if kind == PreferenceSource.Kind.REWARD_MODEL:
        models = params.get("models", [params["model"]] if "model" in params else None)
        if not _is_text_list(models):
            problems.append('Give "models": a list of reward model ids or folders (or "model": one).')
        else:
            n_types = len(models or ())
    elif "model" in params and not (isinstance(params["model"], str) and params["model"].strip()):
        problems.append('"model" must be a model id, a local folder or a shipped model name.')
    for name in ("labels", "weights"):
        value = params.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or (n_types is not None and len(value) != n_types):
            problems.append(f'"{name}" must be a list with one entry per type ({n_types or "?"}).')
        elif name == "weights" and not all(isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in value):
            problems.append('"weights" must be non-negative numbers.')
    batch = params.get("batch_size")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        problems.append('"batch_size" must be a positive integer.')
    for name, fields in (("system_template", ["persona"]), ("question_template", ["prompt", "response"])):
        template = params.get(name)
        if template is not None and (not isinstance(template, str) or any("{" + f + "}" not in template for f in fields)):
            problems.append(f'"{name}" must be text containing {" and ".join("{" + f + "}" for f in fields)}.')
    return problems


# --------------------------------------------------------------------------------------------
# Uploaded utilities (the CSV kind)

MAX_CSV_ERRORS = 20


def prompt_key(prompt: Prompt) -> str:
    """How messages and a CSV's prompt column name a prompt: its external id, or its numeric id."""
    return prompt.external_id or str(prompt.pk)


def _prompt_label(prompt_id: int, external_id: str) -> str:
    return f"prompt {external_id!r}" if external_id else f"prompt {prompt_id}"


def no_utilities_message(study: Study) -> str:
    """What to do when a CSV source is still empty but the study's candidates exist."""
    url = reverse("studies:export", args=[study.slug, "candidates"])
    return (
        "No utilities uploaded yet, and the candidates exist now: download them "
        f"({url}, or manage.py export_study {study.slug} --table candidates), give each user type a "
        "utility per candidate_id (leave out the attention checks), then paste or upload the CSV "
        "(type,candidate_id,utility[,weight]) into this source and press Prepare again."
    )


@dataclass(frozen=True)
class StudyUtilities:
    """A utilities CSV resolved against a study's candidates.

    columns: prompt id → its candidate ids in column order (the prompt's population candidates);
    utilities: prompt id → `workers.populations.SourceUtilities` over those columns.
    """

    columns: dict[int, list[int]]
    utilities: dict[int, SourceUtilities]

    def for_prompt(self, prompt_id: int, candidate_ids: list[int] | None = None) -> SourceUtilities:
        """The prompt's SourceUtilities, with columns in the order of `candidate_ids` if given."""
        columns = self.columns.get(prompt_id)
        if columns is None:
            raise ValueError(f"prompt {prompt_id} had no candidates when the utilities CSV was checked")
        parsed = self.utilities[prompt_id]
        if candidate_ids is None:
            return parsed
        if set(candidate_ids) != set(columns) or len(candidate_ids) != len(columns):
            raise ValueError(f"the candidates of prompt {prompt_id} changed since the utilities CSV was checked")
        where = {pk: j for j, pk in enumerate(columns)}
        order = [where[pk] for pk in candidate_ids]
        return SourceUtilities(parsed.utilities[:, order], parsed.weights, list(parsed.type_labels))


def csv_utilities(study: Study | None, data: str, *, max_errors: int = MAX_CSV_ERRORS) -> StudyUtilities:
    """Resolve a utilities CSV (CSV_HELP) against the study's current candidates.

    Every prompt that has candidates must be scored; prompts without candidates yet can't be
    named (their ids don't exist). Raises `workers.populations.UtilitiesCSVError` with every
    problem (line numbers included), capped at `max_errors`.
    """
    table = populations.read_utilities_csv(data, check_columns=CHECK_COLUMNS, ignore_columns=IGNORED_COLUMNS, max_errors=max_errors)
    candidates: dict[int, CandidateColumn] = {}
    columns: dict[int, list[int]] = {}
    names: dict[Hashable, str] = {}
    if study is not None and study.pk is not None:
        rows = (
            Candidate.objects.filter(prompt__study=study, is_attention_check=False)
            .order_by("prompt_id", "generator_id", "sample_index")  # population_candidates' order per prompt
            .values_list("pk", "prompt_id", "prompt__external_id", "text_sha256")
        )
        study_names = {study.slug, safe_text(study.slug)}
        checks: dict[int, dict[str, set[str]]] = {}
        for pk, prompt_id, external_id, sha in rows:
            if prompt_id not in checks:
                names[prompt_id] = _prompt_label(prompt_id, external_id)
                checks[prompt_id] = {
                    "study": study_names,
                    "prompt": {v for v in (external_id, str(prompt_id)) if v},
                    "prompt_id": {str(prompt_id)},
                    "prompt_external_id": {external_id, safe_text(external_id)},
                }
            ids = columns.setdefault(prompt_id, [])
            candidates[pk] = CandidateColumn(prompt_id, len(ids), {**checks[prompt_id], "text_sha256": {sha}})
            ids.append(pk)
    unknown: list[int] = []
    for row in table.rows:  # only the first few unknown ids can be reported: look up no more
        if row.candidate_id not in candidates and row.candidate_id not in unknown:
            unknown.append(row.candidate_id)
            if len(unknown) >= max_errors:
                break
    refused = {}
    for pk, study_id in Candidate.objects.filter(pk__in=unknown).values_list("pk", "prompt__study_id"):
        same = study is not None and study_id == study.pk
        refused[pk] = "is an attention check, in no population: leave it out" if same else "belongs to another study"
    parsed = populations.utilities_by_group(
        table,
        candidates=candidates,
        sizes={prompt_id: len(ids) for prompt_id, ids in columns.items()},
        refused=refused,
        group_names=names,
        max_errors=max_errors,
    )
    return StudyUtilities(columns, cast(dict[int, SourceUtilities], parsed))  # grouped by prompt id


def csv_problems(study: Study | None, data: str) -> list[str]:
    """Readable problems of a CSV source's data against the study's current candidates; [] if valid.

    Empty data is fine until every prompt has candidates (Prepare generates them, then stops
    at the populations and asks for the file).
    """
    if not data.strip():
        if study is None or study.pk is None or not study.prompts.exists():
            return []
        waiting = study.prompts.exclude(candidates__is_attention_check=False).exists()
        return [] if waiting else [no_utilities_message(study)]
    try:
        csv_utilities(study, data)
    except UtilitiesCSVError as exc:
        return _error_lines(exc)
    return []


def _error_lines(exc: UtilitiesCSVError) -> list[str]:
    lines = [str(e) for e in exc.errors]
    if len(lines) >= MAX_CSV_ERRORS:
        lines.append(f"(stopped after {MAX_CSV_ERRORS} problems)")
    return lines


def resolved_csv(source: PreferenceSource) -> StudyUtilities | UtilitiesCSVError:
    """`csv_utilities` of a CSV source, or the UtilitiesCSVError it raised, cached on the instance.

    The populations step passes the same source instances for every prompt, so the file is
    parsed once per run rather than once per prompt; the key makes an edited `data` re-parse.
    """
    key = (source.study_id, hashlib.sha256(source.data.encode()).hexdigest())
    cached = source.__dict__.get("_csv_utilities")
    if cached is None or cached[0] != key:
        result: StudyUtilities | UtilitiesCSVError
        try:
            result = csv_utilities(source.study, source.data)
        except UtilitiesCSVError as exc:
            result = exc
        cached = (key, result)
        source.__dict__["_csv_utilities"] = cached
    return cached[1]


def source_problems(source: PreferenceSource) -> list[str]:
    """Problems of a saved source: its params and, for the CSV kind, its data against the study."""
    problems = source_params_problems(source.kind, source.params)
    if source.kind == PreferenceSource.Kind.CSV:
        if not source.data.strip():
            problems += csv_problems(source.study, "")
        else:
            resolved = resolved_csv(source)
            if isinstance(resolved, Exception):
                problems += _error_lines(resolved)
    return problems


def source_utilities(source: PreferenceSource, prompt: Prompt, candidates: list[Candidate]) -> SourceUtilities:
    """The source's `SourceUtilities` (U (T, N), weights (T,), labels) over `candidates`.

    Model-backed kinds load their models in this (worker) process, cached per process.
    """
    params = source.params or {}
    texts = [c.text for c in candidates]
    common = {k: params[k] for k in ("labels", "weights", "batch_size") if k in params}
    if source.kind == PreferenceSource.Kind.CSV:
        if not source.data.strip():
            raise ValueError(no_utilities_message(source.study))
        resolved = resolved_csv(source)
        if isinstance(resolved, Exception):
            raise resolved
        return resolved.for_prompt(prompt.pk, [c.pk for c in candidates])
    if source.kind == PreferenceSource.Kind.PERSONA_JUDGE:
        handle = generation.load_model(params.get("model", DEFAULT_JUDGE_MODEL))
        templates = {k: params[k] for k in ("system_template", "question_template") if k in params}
        return populations.persona_judge_utilities(handle, prompt.text, texts, params["personas"], **common, **templates)
    if source.kind == PreferenceSource.Kind.EMBEDDING:
        handle = generation.load_model(params.get("model", DEFAULT_EMBEDDER), kind="embedding")
        return populations.embedding_utilities(handle, texts, params["personas"], **common)
    if source.kind == PreferenceSource.Kind.REWARD_MODEL:
        refs = params.get("models", [params.get("model")])
        handles = [generation.load_model(ref, kind="sequence-classification") for ref in refs]
        return populations.reward_model_utilities(handles, prompt.text, texts, **common)
    raise ValueError(f"unknown preference source kind {source.kind!r}")
