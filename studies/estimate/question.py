"""The pre-registered question's live answer (issue #22, docs/theory.md §11): judgments → units → a
confidence sequence (`workers.stats.sequential`) → answered yes / no / within the margin, or not yet.

The units are those of the results page's anytime-valid column (`sequential.anytime_interval`): per
prompt, the weighted mean credit of the headline cell's rows (the policy against its adversary at k,
judgments and items decided by construction, `results.headline_arrays`). A threshold question reads
the CS of one cell; a difference question the CS of the paired per-prompt differences of two cells
(the prompts both have); a precision question every headline cell's CS. ρ is tuned before the data
at the study's prompt count with the largest sd a unit can have (½ for a mean of [0, 1] credits, 1
for a difference), the bound the regularising pseudo-unit uses too (`max_variance`). The answer is
the rule's at the current number of units: a CS covers θ at every t at once, so reading it now, at
a time chosen by the periodic check or by whoever opens the page, keeps the error rate ≤ α.

Whose judgments: a pilot copy's simulated annotators', any other study's real annotators'; those of
participants rejected in review or ended for failed attention checks are left out, as on the page.

The saving: against the planner's size of the study (`plans.design_fit`: its items × annotations
per item, attention checks included), the judgments it took to answer (the number recorded when the
periodic check first found it answered, else the judgments so far), at the planner's price per
participant ÷ items per participant when the question names one; without a price, judgments only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from studies.estimate import plans
from studies.estimate.results import headline_arrays, judgments_for
from studies.models import Study, StudyQuestion
from workers.stats import sequential

YES, NO, EQUIVALENT, REACHED = (StudyQuestion.Answer.YES, StudyQuestion.Answer.NO, StudyQuestion.Answer.EQUIVALENT,
                                StudyQuestion.Answer.REACHED)  # fmt: skip
_ANSWER_OF = {sequential.ABOVE: YES, sequential.BELOW: NO, sequential.EQUIVALENT: EQUIVALENT}
MEAN_SD, DIFFERENCE_SD = 0.5, 1.0  # the largest sd of a [0, 1] prompt mean, and of a difference of two
#: How often a simulated run checks its study's question (`watcher`), at most.
SIMULATION_CHECK_SECONDS = 2.0
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """One confidence sequence now: what it is about, its estimate and interval, and its units."""

    label: str
    estimate: float
    low: float
    high: float
    n_prompts: int


@dataclass(frozen=True)
class LiveAnswer:
    """The question's answer now: `answer` is "" while not yet answered."""

    question: StudyQuestion
    answer: str
    sentence: str
    readings: tuple[Reading, ...]
    confidence: float
    origin: str

    @property
    def answered(self) -> bool:
        return bool(self.answer)


@dataclass(frozen=True)
class Saving:
    """Judgments used to answer against the planned size, and the money that is at the planner's price."""

    used: int
    planned: int | None
    price_per_judgment: Decimal | None
    recorded: bool  # `used` is the count the periodic check recorded (else the judgments so far)
    pauses: bool = True  # the question pauses the study when answered (else it only tells: a saving on offer)

    @property
    def saved_judgments(self) -> int | None:
        return None if self.planned is None else max(self.planned - self.used, 0)

    @property
    def saved_money(self) -> Decimal | None:
        if self.saved_judgments is None or self.price_per_judgment is None:
            return None
        return (self.price_per_judgment * self.saved_judgments).quantize(Decimal("0.01"))

    @property
    def sentence(self) -> str:
        when = "when it was answered" if self.recorded else "so far"
        if self.planned is None:
            return f"{self.used:,} judgments {when}; the study has no planned size yet (no design), so no saving."
        saved = max(self.planned - self.used, 0)
        share = f" ({saved / self.planned:.0%} of the plan)" if self.planned else ""
        how = "saved by stopping there" if self.pauses else "that stopping there would save (the question only tells)"
        text = (f"{self.used:,} judgments {when}, against the {self.planned:,} the planner sizes the study for: "
                f"{saved:,} judgments {how}{share}")
        if self.saved_money is None:
            return text + ("; no price per participant is set on the question, so there is no price to count the "
                           "money at (set the planner's price on the question to see it).")
        return text + (f", {self.saved_money:,.2f} at the planner's price per participant ÷ items per participant "
                       f"({self.price_per_judgment:.4f} per judgment).")


def origin_of(study: Study) -> str:
    """Whose judgments the question reads: a pilot copy's simulated annotators, else the real ones."""
    return "simulated" if study.is_pilot else "real"


def prompt_means(arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    """(sorted prompt ids, their weighted mean credits) of a cell's `headline_arrays`: the units of
    `sequential.anytime_interval` (`sequential.prompt_means`)."""
    return sequential.prompt_means(arrays["credit"], arrays["prompt_ids"], arrays["weights"])


def _sequence(units: np.ndarray, *, alpha: float, planned: int, sd: float) -> sequential.Sequence:
    rho = sequential.tuned_rho(max(planned, 1), alpha=alpha, sd=sd)
    return sequential.confidence_sequence(units, alpha=alpha, rho=rho, max_variance=sd * sd)


def _reading(label: str, seq: sequential.Sequence) -> Reading:
    return Reading(label, float(seq.estimate[-1]), float(seq.low[-1]), float(seq.high[-1]), int(seq.count[-1]))


def evaluate(question: StudyQuestion) -> LiveAnswer:
    """The question's answer from the study's judgments now (module docstring)."""
    study = question.study
    origin = origin_of(study)
    planned = study.prompts.count()
    if question.kind == StudyQuestion.Kind.PRECISION:
        answer, sentence, readings = _precision(question, study, origin, planned)
    else:
        answer, sentence, readings = _test(question, study, origin, planned)
    return LiveAnswer(question, answer, sentence, readings, 1 - question.alpha, origin)


def _names(question: StudyQuestion) -> tuple[str, ...]:
    """The policies a threshold (one) or difference (two) question names, as validated (`StudyQuestion.problems`)."""
    names = [p.name for p in (question.policy, question.other_policy) if p is not None]
    return tuple(names[:1] if question.kind == StudyQuestion.Kind.THRESHOLD else names[:2])


def _test(question: StudyQuestion, study: Study, origin: str, planned: int) -> tuple[str, str, tuple[Reading, ...]]:
    """A threshold or difference question: one CS, read by `answer_threshold` / `answer_difference`."""
    names, k = _names(question), int(question.k or 0)
    arrays = headline_arrays(study, origin, policies=names, k=k)
    cells = [arrays[key] for name in names if (key := (name, k, study.opponent_outputs)) in arrays]
    if len(cells) < len(names) or not names:
        return "", f"Not yet: no judgment against the adversary at k = {k} yet.", ()
    if question.kind == StudyQuestion.Kind.THRESHOLD:
        units = prompt_means(cells[0])[1]
        seq = _sequence(units, alpha=question.alpha, planned=planned, sd=MEAN_SD)
        code = int(sequential.answer_threshold(seq, float(question.threshold or 0.0), question.margin)[-1])
        label = f"{names[0]}'s f̂({k})"
    else:
        (pa, ua), (pb, ub) = prompt_means(cells[0]), prompt_means(cells[1])
        both, ia, ib = np.intersect1d(pa, pb, return_indices=True)
        if both.size == 0:
            return "", "Not yet: no prompt has judgments of both policies yet.", ()
        seq = _sequence(ua[ia] - ub[ib], alpha=question.alpha, planned=planned, sd=DIFFERENCE_SD)
        code = int(sequential.answer_difference(seq, question.margin)[-1])
        label = f"{names[0]}'s f̂({k}) − {names[1]}'s"
    reading = _reading(label, seq)
    return _ANSWER_OF.get(code, ""), _test_sentence(question, names, code, reading), (reading,)


def _test_sentence(question: StudyQuestion, names: tuple[str, ...], code: int, r: Reading) -> str:
    where = (f"{r.label} = {r.estimate:.3f}, anytime-valid {1 - question.alpha:.0%} interval [{r.low:.3f}, "
             f"{r.high:.3f}] over {r.n_prompts} prompts")
    a, b = names[0], names[-1]
    if question.kind == StudyQuestion.Kind.THRESHOLD:
        threshold = float(question.threshold or 0.0)
        x = f"{threshold:g}"
        said = {sequential.ABOVE: f"Yes: {a}'s f̂({question.k}) is above {x}",
                sequential.BELOW: f"No: {a}'s f̂({question.k}) is below {x}",
                sequential.EQUIVALENT: f"Within ±{question.margin:g} of {x}"}
        wait = f"it still holds {x}" if r.low <= threshold <= r.high else "it still straddles the margin"
    else:
        said = {sequential.ABOVE: f"Yes: {a}'s f̂({question.k}) is above {b}'s",
                sequential.BELOW: f"No: {b}'s f̂({question.k}) is above {a}'s",
                sequential.EQUIVALENT: f"No difference that matters: within ±{question.margin:g}"}
        wait = "it still holds 0" if r.low <= 0 <= r.high else "it still straddles the margin"
    if code in said:
        return f"{said[code]} ({where})."
    if r.n_prompts < sequential.MIN_UNITS:
        return f"Not yet: {r.n_prompts} prompts, and the rule answers from {sequential.MIN_UNITS} ({where})."
    return f"Not yet: {wait} ({where})."


def _precision(question: StudyQuestion, study: Study, origin: str,
               planned: int) -> tuple[str, str, tuple[Reading, ...]]:
    """Every headline cell (each policy at each k against its adversary) read by `answer_precision`."""
    arrays = headline_arrays(study, origin)
    names = list(study.policies.order_by("id").values_list("name", flat=True))
    wanted = [(name, k, study.opponent_outputs) for name in names for k in study.k_values]
    missing = [key for key in wanted if key not in arrays]
    if missing:
        return "", f"Not yet: {len(missing)} of {len(wanted)} headline cells have no judgment yet.", ()
    seqs, readings = [], []
    for name, k, m in wanted:
        seq = _sequence(prompt_means(arrays[(name, k, m)])[1], alpha=question.alpha, planned=planned, sd=MEAN_SD)
        seqs.append(sequential.Sequence(seq.estimate[-1:], seq.radius[-1:], seq.count[-1:], seq.alpha, seq.method))
        readings.append(_reading(f"{name}'s f̂({k})", seq))
    h = float(question.half_width or 0.0)
    done = bool(sequential.answer_precision(seqs, h)[-1])
    widest = max(readings, key=lambda r: r.high - r.low)
    about = (f"the widest is {widest.label}, ±{(widest.high - widest.low) / 2:.3f} over {widest.n_prompts} prompts, "
             f"anytime-valid {1 - question.alpha:.0%}")
    if done:
        return REACHED, f"Yes: every headline is within ±{h:g} ({about}).", tuple(readings)
    return "", f"Not yet: not every headline is within ±{h:g} ({about}).", tuple(readings)


def judgments_so_far(study: Study) -> int:
    """The judgments the study has taken from the annotators the question reads (every one was paid for)."""
    return judgments_for(study, origin_of(study), include_unreviewed=True).count()


def saving(question: StudyQuestion, live: LiveAnswer | None = None) -> Saving | None:
    """What answering saved against the planned size (module docstring), or None while unanswered."""
    recorded = question.answered_at is not None
    if not recorded and (live is None or not live.answered):
        return None
    study = question.study
    used = question.answered_judgments if recorded and question.answered_judgments is not None else judgments_so_far(study)
    fit = plans.design_fit(study)
    price = question.price_per_participant
    per_judgment = None if price is None else Decimal(price) / study.items_per_participant
    return Saving(used=used, planned=None if fit is None else fit.judgments, price_per_judgment=per_judgment,
                  recorded=recorded, pauses=question.on_answer == StudyQuestion.OnAnswer.PAUSE)


@dataclass(frozen=True)
class QuestionPanel:
    """What the study's pages show of its question: the question, its live answer, the stop, the saving."""

    question: StudyQuestion
    live: LiveAnswer
    saving: Saving | None


def panel(study: Study) -> QuestionPanel | None:
    """The study's question as the results page shows it, or None when it has none."""
    question = StudyQuestion.objects.select_related("study", "policy", "other_policy").filter(study=study).first()
    if question is None:
        return None
    live = evaluate(question)
    return QuestionPanel(question, live, saving(question, live))


def record_if_answered(question_id: int) -> StudyQuestion | None:
    """The periodic check of one live study's question (`studies.tasks.check_questions`): when it is answered,
    record when, at how many judgments and what, once, and pause the study if the question says so.

    The answer is computed before any lock (it reads every judgment of its cells); then the question and the
    study are locked and checked again, so a second run (or the researcher's own pause) changes nothing twice.
    The pause is the researcher's pause (`Study.move_to`, as `services.change_study_status` makes it):
    annotators see the paused page. Returns the question as recorded, or None when nothing was recorded.
    """
    question = StudyQuestion.objects.select_related("study", "policy", "other_policy").filter(
        pk=question_id, answered_at__isnull=True, study__status=Study.Status.LIVE).first()
    if question is None:
        return None
    live = evaluate(question)
    if not live.answered:
        return None
    used = judgments_so_far(question.study)
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=question.study_id)
        if study.status != Study.Status.LIVE:
            return None
        pause = question.on_answer == StudyQuestion.OnAnswer.PAUSE
        recorded = StudyQuestion.objects.filter(pk=question.pk, answered_at__isnull=True).update(
            answered_at=timezone.now(), answered_judgments=used, answer=live.answer, answer_text=live.sentence,
            paused_study=pause)
        if not recorded:
            return None
        if pause:
            study.move_to(Study.Status.PAUSED)
    logger.info("study %s: its question is answered (%s) at %d judgments%s: %s", study.slug, live.answer, used,
                "; paused" if pause else "", live.sentence)
    question.refresh_from_db()
    return question


def watcher(study: Study) -> Callable[[], None]:
    """A check of `study`'s question for a simulated run to call as its annotators finish (at most every
    `SIMULATION_CHECK_SECONDS`): the run holds the worker (`manage.py serve` runs one), so the beat's check
    would wait for its end; this way a pilot stops at its answer, or records it, as a live study would.
    A failed check is logged, never stops the run. Safe from the run's threads (each closes its connection)."""
    question_id = StudyQuestion.objects.filter(study=study, answered_at__isnull=True).values_list("pk", flat=True).first()
    last = [-float("inf")]
    lock = threading.Lock()

    def check() -> None:
        with lock:
            now = time.monotonic()
            if question_id is None or now - last[0] < SIMULATION_CHECK_SECONDS:
                return
            last[0] = now
        try:
            record_if_answered(question_id)
        except Exception:  # the run goes on; the beat's check will try again
            logger.exception("the question of study %s could not be checked during its simulated run", study.pk)
        finally:
            if threading.current_thread() is not threading.main_thread():
                connection.close()

    return check
