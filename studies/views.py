"""The annotator's pages: join → consent → instructions (+ comprehension) → tasks → done.

The participant lives in the Django session, keyed by study (their access token), so every
page after the entry link needs nothing in the URL but the study's slug. Each step view
redirects to the step the participant is actually on, so the browser's back button, a
reload or a bookmarked URL can never skip consent or re-open a finished session. Without
JavaScript every form is a plain POST followed by a redirect; with htmx the next task is
swapped into `#comparison`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from studies import annotation
from studies.annotation import AssignmentLost, InvalidChoice, StudyUnavailable
from studies.forms import ComprehensionForm, ConsentForm, JudgmentForm
from studies.htmx import HtmxHttpRequest
from studies.models import Assignment, Participant, Study

# Prolific ids are 24 hex characters; lab tools send similar opaque ids. Anything else is refused.
EXTERNAL_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
STEP_FOR_STATUS: dict[str, str] = {
    Participant.Status.JOINED: "consent",
    Participant.Status.CONSENTED: "instructions",
    Participant.Status.ACTIVE: "task",
}


def _session_key(study: Study) -> str:
    return f"ualign.participant.{study.pk}"


def _session_participant(request: HtmxHttpRequest, study: Study) -> Participant | None:
    token = request.session.get(_session_key(study))
    if not token:
        return None
    return Participant.objects.filter(study=study, access_token=token).select_related("study").first()


def _step_url(participant: Participant) -> str:
    step = STEP_FOR_STATUS.get(participant.status, "done")
    return reverse(f"studies:{step}", args=[participant.study.slug])


def _go(request: HtmxHttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _link_invalid(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "studies/link_invalid.html", status=404)


def _unavailable(request: HtmxHttpRequest, study: Study, reason: str) -> HttpResponse:
    return render(request, "studies/unavailable.html", {"study": study, "reason": reason})


def participant_step(step: str, *, open_when_closed: bool = False) -> Callable:
    """Load the study and the session's participant; send them to their current step.

    A visitor without a participant for this study gets the "link not valid" page (404).
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HtmxHttpRequest, slug: str) -> HttpResponse:
            study = Study.objects.filter(slug=slug).first()
            participant = _session_participant(request, study) if study else None
            if study is None or participant is None:
                return _link_invalid(request)
            if STEP_FOR_STATUS.get(participant.status, "done") != step:
                return _go(request, _step_url(participant))
            if step != "done" and not open_when_closed and not study.is_accepting_participants:
                return _unavailable(request, study, "closed")
            return view(request, study, participant)

        return wrapper

    return decorator


@require_GET
def join(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The study link: `?PROLIFIC_PID=…&STUDY_ID=…&SESSION_ID=…` or `?invite=<token>`."""
    study = Study.objects.filter(slug=slug).first()
    if study is None:
        return _link_invalid(request)
    participant = _session_participant(request, study)
    pid = request.GET.get("PROLIFIC_PID", "").strip()
    try:
        if pid:
            if not EXTERNAL_ID.fullmatch(pid):
                return _link_invalid(request)
            if participant is None or participant.external_id != pid:
                participant = annotation.create_or_resume_participant(
                    study=study,
                    prolific_pid=pid,
                    prolific_study_id=request.GET.get("STUDY_ID", ""),
                    prolific_session_id=request.GET.get("SESSION_ID", ""),
                )
        elif participant is None:
            if not annotation.is_valid_invite(study, request.GET.get("invite", "")):
                return _link_invalid(request)
            participant = annotation.create_or_resume_participant(study=study)
    except StudyUnavailable as exc:
        return _unavailable(request, study, exc.reason)
    if request.session.get(_session_key(study)) != participant.access_token:
        request.session.cycle_key()
        request.session[_session_key(study)] = participant.access_token
    return redirect(_step_url(participant))


@require_http_methods(["GET", "POST"])
@participant_step("consent")
def consent(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    form = ConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            participant = annotation.record_consent(participant=participant, accepted=form.accepted)
        except StudyUnavailable as exc:
            return _unavailable(request, study, exc.reason)
        return redirect(_step_url(participant))
    return render(request, "studies/consent.html", {"study": study, "form": form})


@require_http_methods(["GET", "POST"])
@participant_step("instructions")
def instructions(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    form = None
    if study.comprehension_question:
        form = ComprehensionForm(request.POST or None, choices=study.comprehension_choices)
    if request.method == "POST" and (form is None or form.is_valid()):
        answer = form.cleaned_data["answer"] if form else None
        participant = annotation.start_tasks(participant=participant, comprehension_answer=answer)
        if participant.status == Participant.Status.CONSENTED:
            form = ComprehensionForm(choices=study.comprehension_choices)  # a fresh try, unselected
            return render(request, "studies/instructions.html", _instructions_context(study, participant, form, True))
        return redirect(_step_url(participant))
    return render(request, "studies/instructions.html", _instructions_context(study, participant, form, False))


def _instructions_context(study: Study, participant: Participant, form, wrong: bool) -> dict:
    return {
        "study": study,
        "form": form,
        "wrong_answer": wrong,
        "attempts_left": annotation.COMPREHENSION_ATTEMPTS - participant.comprehension_attempts,
    }


def _task_context(
    study: Study, participant: Participant, assignment: Assignment, form=None, error: str = "", notice: str = ""
) -> dict:
    annotation.mark_rendered(assignment)
    item = assignment.item
    shown = annotation.shown_in_order(assignment)
    return {
        "study": study,
        "assignment": assignment,
        "item": item,
        "shown": list(enumerate(shown, start=1)),
        "progress": annotation.progress(participant),
        "allow_cant_decide": study.allow_cant_decide and not item.is_attention_check,
        "form": form or JudgmentForm(initial={"assignment": assignment.pk}),
        "error": error,
        "notice": notice,
    }


def _next_task(request: HtmxHttpRequest, study: Study, participant: Participant, notice: str = "") -> HttpResponse:
    """The next task, as the full page or (htmx) as the `comparison` partial."""
    assignment = annotation.assign_next_item(participant=participant)
    if assignment is None:
        participant = annotation.finish_if_out_of_tasks(participant=participant)
        if participant.status != Participant.Status.ACTIVE:
            return _go(request, _step_url(participant))
        if request.htmx:
            return HttpResponseClientRedirect(reverse("studies:task", args=[study.slug]))
        return _unavailable(request, study, "closed" if not study.is_accepting_participants else "full")
    context = _task_context(study, participant, assignment, notice=notice)
    if request.htmx:
        return _partial(request, context)
    return render(request, "studies/annotate.html", context)


def _partial(request: HtmxHttpRequest, context: dict, status: int = 200) -> HttpResponse:
    """The comparison partial, plus the progress region swapped out of band."""
    html = render_to_string("studies/annotate.html#comparison", context, request)
    html += render_to_string("studies/annotate.html#progress", {**context, "oob": True}, request)
    return HttpResponse(html, status=status)


@require_GET
@participant_step("task")
def task(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    return _next_task(request, study, participant)


@require_POST
@participant_step("task", open_when_closed=True)
def submit_judgment(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    """Record a pick (at most once per assignment), then show the next task."""
    form = JudgmentForm(request.POST)
    assignment_id = form.data.get("assignment", "")
    assignment = participant.assignments.filter(pk=int(assignment_id)).first() if assignment_id.isdigit() else None
    if assignment is None:
        return render(request, "studies/link_invalid.html", status=404)
    error = ""
    if form.is_valid():
        try:
            annotation.record_judgment(
                participant=participant,
                assignment_id=assignment.pk,
                position=form.cleaned_data["choice"],
                cant_decide=form.cleaned_data["cant_decide"],
                rationale=form.cleaned_data["rationale"],
            )
        except InvalidChoice as exc:
            error = str(exc)
        except AssignmentLost:
            notice = "That task had timed out and was given to someone else, so here is a new one."
            return _after_pick(request, study, participant, notice)
        else:
            return _after_pick(request, study, participant)
    else:
        error = " ".join(str(e) for e in form.non_field_errors()) or "Choose one of the responses."
    if assignment.status != Assignment.Status.ASSIGNED:
        return _after_pick(request, study, participant)
    context = _task_context(study, participant, assignment, form=form, error=error)
    if request.htmx:
        return _partial(request, context)
    return render(request, "studies/annotate.html", context, status=400)


def _after_pick(request: HtmxHttpRequest, study: Study, participant: Participant, notice: str = "") -> HttpResponse:
    participant.refresh_from_db()
    if participant.status != Participant.Status.ACTIVE or not study.is_accepting_participants:
        return _go(request, _step_url(participant) if participant.status != Participant.Status.ACTIVE
                   else reverse("studies:task", args=[study.slug]))
    if not request.htmx:
        if notice:
            messages.info(request, notice)
        return redirect("studies:task", study.slug)  # PRG: a reload never re-posts the pick
    return _next_task(request, study, participant, notice=notice)


@require_GET
@participant_step("done")
def done(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    return render(request, "studies/done.html", {"study": study, "participant": participant})
