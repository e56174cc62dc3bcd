"""Simulated annotators: synthetic participants who go through the real participant flow over HTTP.

Each simulated annotator is a browser without JavaScript: a cookie jar, GET and POST requests to
the running app (join with a synthetic Prolific id, consent, instructions, every task, the
completion page), the CSRF token read from each form as a browser submits it. Nothing is
written behind the app's back except one flag: right after joining, the simulator marks its
own participant `is_simulated=True` in the database, so that results and exports can keep
simulated judgments apart from real ones. That path is out of reach of a real annotator (the
web app never sets the flag), and the synthetic id carries a random run token, so the
simulator can only ever flag the participant it has just created.

The annotator's "mind" is a population (theory.md §1) read from the database: for the shown
texts of its current assignment (display_order → ItemCandidate → Candidate) it takes their
columns in the prompt's PopulationMatrix, or in a population given as a file instead (the same
long CSV format as the CSV preference source, `type,candidate_id,utility[,weight]`, candidates
named by their id as in the candidates export; see `studies.steps.preference_sources.CSV_HELP`). A
population other than the one the policies were fitted on checks how robust a design is when
the model is wrong. It then picks with `workers.policies.choose`, theory.md §1's rule, the one
of the solver and the item predictions: each shown text fills as many positions as the k + m
draws gave it (c_A + c_B), a person of a random type picks a position of maximal utility with
ties split per position, or, with Luce noise at a temperature on the utilities' own scale, each
position is a Luce alternative. Attention-check texts, which are in no population, get a
utility one below every type's worst, so a noiseless annotator always passes the checks.

The participant flow only admits annotators to a live study, and simulated annotators take
item quota like real ones: pilot a design on a pilot copy of the study (`studies.pilots`, the
study page's "Pilot with simulated annotators", `manage.py simulate_annotators --pilot`), which
has its own quota and judgments.
`manage.py simulate_annotators` runs them in its own process; the admin's action queues them for
a worker (`studies.services.start_simulation` → `studies.tasks.simulate_annotators`).
"""

from __future__ import annotations

import http.cookiejar
import logging
import math
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from html.parser import HTMLParser

import numpy as np
from django.db import connection
from django.urls import reverse

from studies.judgment import rules
from studies.judgment.assign import shown_in_order
from studies.judgment.flow import StudyUnavailable, join_study
from studies.models import Assignment, Participant, Prompt, Study
from studies.steps import StepError
from studies.steps.population import load_population
from studies.steps.preference_sources import StudyUtilities, csv_utilities, prompt_key
from workers.policies import Population, choose
from workers.populations import UtilitiesCSVError

logger = logging.getLogger(__name__)

SIMULATED_PREFIX = "sim-"
# More requests than any participant needs (3 per task plus the steps): a loop guard.
MAX_STEPS_PER_TASK = 4
DEFAULT_MAX_ANNOTATORS = 500


class SimulationError(Exception):
    """The simulation can't run as asked (bad population file, study not live, app unreachable)."""


# --------------------------------------------------------------------------------------------
# The mind: utilities of the shown texts


@dataclass(frozen=True)
class PromptMind:
    """A prompt's population: utilities (T, N) over `candidate_ids`, with type weights (T,)."""

    candidate_ids: list[int]
    utilities: np.ndarray
    weights: np.ndarray

    def shown_population(self, candidate_ids: list[int]) -> Population:
        """The population over the shown texts, in the order given; texts outside the population
        (attention-check texts) rank one below every type's worst."""
        column = {cid: j for j, cid in enumerate(self.candidate_ids)}
        floor = self.utilities.min(axis=1) - 1.0
        cols = [self.utilities[:, column[c]] if c in column else floor for c in candidate_ids]
        if not any(c in column for c in candidate_ids):
            raise SimulationError(f"none of the shown candidates {candidate_ids} is in the population")
        return Population(np.stack(cols, axis=1), self.weights)


class Minds:
    """Where simulated annotators get their utilities: the study's own PopulationMatrix rows,
    or a population file parsed per prompt on first use."""

    def __init__(self, study: Study, population_csv: str | None = None) -> None:
        self.study = study
        self.population_csv = population_csv
        self._cache: dict[int, PromptMind] = {}
        self._file: StudyUtilities | None = None  # the population file resolved against the study, once

    def for_prompt(self, prompt: Prompt) -> PromptMind:
        if prompt.pk not in self._cache:
            self._cache[prompt.pk] = self._load(prompt)
        return self._cache[prompt.pk]

    def validate(self) -> None:
        """Load every prompt's population now, so a bad file fails before anyone joins."""
        for prompt in self.study.prompts.all():
            self.for_prompt(prompt)

    def _load(self, prompt: Prompt) -> PromptMind:
        if self.population_csv is None:
            try:
                pp = load_population(prompt)
            except StepError as exc:
                raise SimulationError(str(exc)) from exc
            return PromptMind(pp.candidate_ids, pp.pop.utilities, pp.pop.weights)
        if self._file is None:
            # A pilot copy's shown texts are its original's candidates: the file names those.
            self._file = _population_file(self.study.pilot_of or self.study, self.population_csv)
        return _mind_from_file(self._original_prompt(prompt), self._file)

    def _original_prompt(self, prompt: Prompt) -> Prompt:
        """For a pilot copy, the original's prompt it copies (prompts are copied in id order)."""
        original = self.study.pilot_of
        if original is None:
            return prompt
        pairs = zip(self.study.prompts.order_by("id"), original.prompts.order_by("id"), strict=False)
        return next((theirs for ours, theirs in pairs if ours.pk == prompt.pk), prompt)


def _population_file(study: Study, data: str) -> StudyUtilities:
    """The population file resolved against the study's candidates (`studies.steps.preference_sources.csv_utilities`)."""
    if not data.strip():
        raise SimulationError("population file: it is empty")
    try:
        return csv_utilities(study, data)
    except UtilitiesCSVError as exc:
        raise SimulationError(f"population file: {exc}") from exc


def _mind_from_file(prompt: Prompt, resolved: StudyUtilities) -> PromptMind:
    if prompt.pk not in resolved.columns:
        raise SimulationError(f"prompt {prompt_key(prompt)} has no candidates yet")
    parsed = resolved.for_prompt(prompt.pk)
    return PromptMind(list(resolved.columns[prompt.pk]), np.asarray(parsed.utilities), np.asarray(parsed.weights))


# --------------------------------------------------------------------------------------------
# The browser


class _PageParser(HTMLParser):
    """What a no-JS browser needs from a page: form fields, submit buttons, the first POST form's
    action and the page's canonical link (the URL a step shown in a form's answer names)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.canonical = ""
        self.form_action = ""
        self.choices: list[int] = []
        self.completion_code = ""
        self._in_code = False

    def handle_starttag(self, tag: str, attrs) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("name"):
            self.inputs.setdefault(a["name"], a.get("value", ""))
        elif tag == "link" and a.get("rel") == "canonical":
            self.canonical = a.get("href", "")
        elif tag == "form" and a.get("method", "").lower() == "post" and not self.form_action:
            self.form_action = a.get("action", "")
        elif tag == "button" and a.get("name") == "choice" and a.get("value", "").isdigit():
            self.choices.append(int(a["value"]))
        self._in_code = a.get("id") == "completion-code"

    def handle_data(self, data: str) -> None:
        if self._in_code and data.strip():
            self.completion_code = data.strip()
            self._in_code = False


@dataclass
class Page:
    url: str
    status: int
    html: str

    @property
    def path(self) -> str:
        """The page's own path: its canonical link's when it has one (each onboarding step's POST
        answers with the next step's page, which names its URL; a browser with JavaScript shows
        that one), else the URL's."""
        canonical = self.parse().canonical
        return urllib.parse.urlsplit(urllib.parse.urljoin(self.url, canonical) if canonical else self.url).path

    @property
    def form_url(self) -> str:
        """Where the page's form posts: its action, or the page's own URL without one."""
        action = self.parse().form_action
        return urllib.parse.urljoin(self.url, action) if action else self.url

    def parse(self) -> _PageParser:
        """What a no-JS browser reads of the page; parsed once (`path`, `form_url` and the step
        each ask for it, and a page does not change)."""
        return self._parsed

    @cached_property
    def _parsed(self) -> _PageParser:
        parser = _PageParser()
        parser.feed(self.html)
        return parser


class Browser:
    """A cookie jar and urllib: follows redirects (a POST's 302 becomes a GET, as browsers do)."""

    def __init__(self, base_url: str, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.requests = 0

    def _open(self, request: urllib.request.Request) -> Page:
        self.requests += 1
        request.add_header("User-Agent", "ualign-simulated-annotator/1")
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return Page(response.geturl(), response.status, response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            return Page(exc.geturl(), exc.code, exc.read().decode("utf-8", "replace"))
        except urllib.error.URLError as exc:
            raise SimulationError(f"can't reach the app at {self.base_url}: {exc.reason}") from exc

    def get(self, path: str) -> Page:
        return self._open(urllib.request.Request(self.base_url + path))

    def post(self, url: str, fields: dict[str, str], page: Page) -> Page:
        """Submit a form of `page` (to `url`, a path or absolute URL) with its CSRF token."""
        token = page.parse().inputs.get("csrfmiddlewaretoken", "")
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        target = url if url.startswith("http") else self.base_url + url
        request = urllib.request.Request(target, data=data, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        request.add_header("Referer", page.url)
        return self._open(request)


# --------------------------------------------------------------------------------------------
# One annotator


@dataclass
class AnnotatorOutcome:
    external_id: str
    participant_id: int | None = None
    status: str = ""  # the Participant status at the end, or "refused" when the app turned them away
    judgments: int = 0
    completion_code: str = ""
    requests: int = 0
    note: str = ""


def _reload_formless(browser: Browser, page: Page, step: str, external_id: str) -> tuple[Page, str]:
    """A page without its form (cut short, or an error page served as 200): reload it once, as a
    person would, rather than submit a form that isn't there. Returns the page and a note if the
    form is still missing (a task page without its form is left to say why: full, or closed)."""
    retry = browser.get(page.path)
    if "csrfmiddlewaretoken" not in retry.parse().inputs and step != "task":
        return page, f"no form on {page.path} (HTTP {page.status}, {len(page.html)} bytes: {_title(page.html)!r})"
    logger.warning("reloaded %s for %s: the first response had no form (%d bytes)", page.path, external_id,
                   len(page.html))
    return retry, ""


def run_annotator(
    base_url: str,
    study: Study,
    external_id: str,
    minds: Minds,
    rng: np.random.Generator,
    *,
    luce_temperature: float | None = None,
    on_judgment: Callable[[], None] | None = None,
) -> AnnotatorOutcome:
    """Take one synthetic participant through the whole flow; returns where they ended."""
    browser = Browser(base_url)
    outcome = AnnotatorOutcome(external_id)
    slug = study.slug
    # Joined by the service (the researcher's own tool, so no per-client join limit), then bound
    # to this browser through the participant's resume link, over HTTP like everything after it.
    try:
        participant = join_study(study=study, prolific_pid=external_id, prolific_study_id="simulated",
                                 prolific_session_id=external_id, is_simulated=True)
    except StudyUnavailable as exc:
        outcome.status = "refused"
        outcome.note = "This study is full" if exc.reason == "full" else "This study is not open"
        return outcome
    resume = reverse("studies:resume", args=[slug, participant.resume_token])
    page = browser.post(resume, {}, browser.get(resume))
    outcome.participant_id = participant.pk
    base_path = f"/s/{slug}/"
    budget = MAX_STEPS_PER_TASK * (study.items_per_participant + 3)
    for _ in range(budget):
        step = page.path.removeprefix(base_path).strip("/")
        if page.status >= 400:
            outcome.note = f"HTTP {page.status} at {page.path}"
            break
        if step in ("consent", "instructions", "task") and "csrfmiddlewaretoken" not in page.parse().inputs:
            page, outcome.note = _reload_formless(browser, page, step, external_id)
            if outcome.note:
                break
        if step == "consent":
            page = browser.post(page.form_url, {"decision": "accept"}, page)
        elif step == "instructions":
            fields = {"answer": study.comprehension_answer} if study.comprehension_question else {}
            page = browser.post(page.form_url, fields, page)
        elif step == "task":
            parsed = page.parse()
            assignment_id = parsed.inputs.get("assignment", "")
            if not assignment_id.isdigit():
                outcome.note = _title(page.html)  # "study full" / "not open"
                break
            position = _pick(participant, int(assignment_id), parsed.choices, minds, rng, luce_temperature)
            page = browser.post(f"/s/{slug}/judgments/", {"assignment": assignment_id, "choice": str(position), "rationale": ""}, page)
            outcome.judgments += 1
            if on_judgment:
                on_judgment()
        elif step == "done":
            outcome.completion_code = page.parse().completion_code
            break
        else:
            outcome.note = f"unexpected page {page.path}"
            break
    else:
        outcome.note = "stopped: more requests than the study needs"
    participant.refresh_from_db(fields=["status"])
    outcome.status = participant.status
    outcome.requests = browser.requests
    return outcome


def _pick(participant: Participant, assignment_id: int, positions: list[int], minds: Minds,
          rng: np.random.Generator, luce_temperature: float | None) -> int:
    """The position (from 1) this annotator chooses on the task page it was shown."""
    assignment = Assignment.objects.select_related("item__prompt").filter(pk=assignment_id, participant=participant).first()
    if assignment is None:
        raise SimulationError(f"the task page shows assignment {assignment_id}, which is not this participant's")
    shown = shown_in_order(assignment)
    if sorted(positions) != list(range(1, len(shown) + 1)):
        raise SimulationError(f"the page offers positions {positions} but assignment {assignment_id} shows {len(shown)} texts")
    pop = minds.for_prompt(assignment.item.prompt).shown_population([s.candidate_id for s in shown])
    positions_filled = [s.count_policy + s.count_opponent for s in shown]  # draws behind each text
    return int(choose(pop, positions_filled, rng, luce_temperature=luce_temperature)) + 1


def _title(html: str) -> str:
    start, end = html.find("<h1>"), html.find("</h1>")
    return html[start + 4 : end].strip() if 0 <= start < end else ""


# --------------------------------------------------------------------------------------------
# Many annotators


@dataclass
class SimulationReport:
    study_id: int
    run: str
    annotators: list[AnnotatorOutcome] = field(default_factory=list)

    @property
    def judgments(self) -> int:
        return sum(a.judgments for a in self.annotators)

    def count(self, status: str) -> int:
        return sum(a.status == status for a in self.annotators)

    def as_dict(self) -> dict:
        statuses: dict[str, int] = {}
        for a in self.annotators:
            statuses[a.status] = statuses.get(a.status, 0) + 1
        return {
            "run": self.run,
            "annotators": len(self.annotators),
            "judgments": self.judgments,
            "statuses": statuses,
            "requests": sum(a.requests for a in self.annotators),
            "notes": sorted({a.note for a in self.annotators if a.note})[:5],
        }


def _check_run(study: Study, *, annotators: int, concurrency: int, luce_temperature: float | None) -> None:
    """Refuse a run that can't go as asked (the study is re-read: it must be live now)."""
    if annotators < 1:
        raise SimulationError("annotators must be at least 1")
    if concurrency < 1:
        raise SimulationError("concurrency must be at least 1")
    if luce_temperature is not None and not luce_temperature > 0:
        raise SimulationError("the Luce temperature must be positive")
    study.refresh_from_db()
    if study.status != Study.Status.LIVE:
        raise SimulationError(f"the study is {study.status}: annotators (real or simulated) can only join a live study")


def simulate_annotators(
    study: Study,
    *,
    annotators: int,
    base_url: str,
    population_csv: str | None = None,
    luce_temperature: float | None = None,
    seed: int = 0,
    concurrency: int = 1,
    stop_when_full: bool = True,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> SimulationReport:
    """Run `annotators` synthetic participants through the app at `base_url`.

    Annotator n draws from `np.random.default_rng([seed, n])`; `concurrency` of them work at
    once (each in its own thread, as separate people would). With `stop_when_full`, no new
    annotator starts once the app has turned one away (the study is full or closed).
    """
    _check_run(study, annotators=annotators, concurrency=concurrency, luce_temperature=luce_temperature)
    minds = Minds(study, population_csv)
    minds.validate()
    run = secrets.token_hex(4)
    report = SimulationReport(study.pk, run)
    lock = threading.Lock()
    state = {"judgments": 0, "finished": 0, "refused": False}

    def judged() -> None:
        with lock:
            state["judgments"] += 1

    def one(n: int) -> AnnotatorOutcome | None:
        if stop_when_full and state["refused"]:
            return None
        try:
            outcome = run_annotator(
                base_url, study, f"{SIMULATED_PREFIX}{run}-{n + 1}", minds, np.random.default_rng([seed, n]),
                luce_temperature=luce_temperature, on_judgment=judged,
            )
        finally:
            if threading.current_thread() is not threading.main_thread() and concurrency > 1:
                connection.close()  # each worker thread has its own database connection
        logger.info("simulated annotator %s: %s, %d judgments %s", outcome.external_id, outcome.status,
                    outcome.judgments, outcome.note)
        with lock:
            state["finished"] += 1
            state["refused"] |= outcome.status == "refused"
        if on_progress:
            on_progress(state["finished"], annotators,
                        f"{state['finished']} of {annotators} simulated annotators done, {state['judgments']} judgments")
        return outcome

    if concurrency == 1:
        outcomes = [one(n) for n in range(annotators)]
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sim") as pool:
            outcomes = list(pool.map(one, range(annotators)))
    report.annotators = [o for o in outcomes if o is not None]
    return report


def annotators_to_fill(study: Study) -> int:
    """How many annotators (at `items_per_participant` each) the study's open quota needs.

    Items decided by construction (needs_judgment False) are never assigned, so they need nobody.
    """
    return max(1, min(DEFAULT_MAX_ANNOTATORS, math.ceil(rules.open_places(study) / study.items_per_participant)))
