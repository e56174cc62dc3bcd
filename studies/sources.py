"""Preference sources: what each kind's params mean, how they are checked, how they are run.

Each `PreferenceSource` of a study gives user types to every prompt's population
(`workers.populations`); its `weight` is its share of the population, split among its types
by their own weights (default equal).

params per kind (a JSON object):

persona_judge  {"personas": ["A retired teacher who …", …], optional "model" (default the shipped
               "smollm2-135m-instruct"), "labels", "weights" (one per persona), "batch_size",
               "system_template" (with {persona}), "question_template" (with {prompt} and {response})}
               A causal LM asked, as each persona, whether the answer is good: log P(yes) − log P(no).
embedding      {"personas": [...], optional "model" (default the shipped "all-minilm-l6-v2"),
               "labels", "weights", "batch_size"}: cosine similarity of response and persona.
reward_model   {"models": ["<HF id or local folder>", …]} (or "model": one), optional "labels",
               "weights", "batch_size": one type per sequence-classification reward model.
csv            the utilities go in the source's data field (format: CSV_HELP); params unused.
"""

from __future__ import annotations

import csv
import io

from studies.models import Candidate, PreferenceSource, Prompt

DEFAULT_JUDGE_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"

CSV_HELP = (
    "Columns type,candidate,utility (optional weight and prompt): one row per user type and candidate. "
    "candidate is the candidate's position (from 0) among the prompt's candidates in the order the "
    "admin lists them (by generator, then sample index); prompt is the prompt's external id (or its "
    "numeric id) when one file covers several prompts; weight is the type's weight."
)

_ALLOWED = {
    PreferenceSource.Kind.PERSONA_JUDGE: {"model", "personas", "labels", "weights", "batch_size",
                                          "system_template", "question_template"},
    PreferenceSource.Kind.EMBEDDING: {"model", "personas", "labels", "weights", "batch_size"},
    PreferenceSource.Kind.REWARD_MODEL: {"model", "models", "labels", "weights", "batch_size"},
    PreferenceSource.Kind.CSV: set(),
}


def _is_text_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)


def params_problems(kind: str, params: object, data: str = "") -> list[str]:
    """Readable problems with a source's params (and the CSV header, for that kind); [] if valid."""
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
            n_types = len(models)
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
    if kind == PreferenceSource.Kind.CSV:
        problems += _csv_header_problems(data)
    return problems


def _csv_header_problems(data: str) -> list[str]:
    if not data.strip():
        return ["Paste or upload the utilities CSV into the data field. " + CSV_HELP]
    header = next(csv.reader(io.StringIO(data.removeprefix("\ufeff"))), [])
    columns = {c.strip().lower() for c in header}
    missing = [c for c in ("type", "candidate", "utility") if c not in columns]
    if missing:
        return [f"The CSV header lacks {', '.join(missing)}. " + CSV_HELP]
    return []


def source_problems(source: PreferenceSource) -> list[str]:
    return params_problems(source.kind, source.params, source.data)


def prompt_key(prompt: Prompt) -> str:
    """How a utilities CSV names a prompt: its external id, or its numeric id."""
    return prompt.external_id or str(prompt.pk)


def source_utilities(source: PreferenceSource, prompt: Prompt, candidates: list[Candidate]):
    """The source's `SourceUtilities` (U (T, N), weights (T,), labels) over `candidates`.

    Model-backed kinds load their models in this (worker) process, cached per process.
    """
    from workers import generation, populations

    params = source.params or {}
    texts = [c.text for c in candidates]
    common = {k: params[k] for k in ("labels", "weights", "batch_size") if k in params}
    if source.kind == PreferenceSource.Kind.CSV:
        has_prompt_column = "prompt" in {c.strip().lower() for c in next(csv.reader(io.StringIO(source.data)), [])}
        return populations.utilities_from_csv(
            source.data, n_candidates=len(candidates), prompt=prompt_key(prompt) if has_prompt_column else None
        )
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
