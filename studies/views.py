"""The annotator's pages: landing → join → consent → instructions (+ comprehension) → tasks → done.

Identity. Joining binds the participant to the browser that joined: a signed, HttpOnly cookie
(Django's signing, scoped to the study's pages) holds their access token, and every page after
the landing page finds the participant through it alone. A Prolific PID in a link is not
identity: a browser without the cookie that arrives with a PID the study already has is told
to continue in the browser where it started, or to open the participant's resume link (a secret
shown on their task pages, and to the researchers in the admin), so a stranger who knows
someone's PID can neither see nor answer their tasks. Study links carry the study's secret
(`invite`); the landing page is a GET without side effects, and joining is its form's POST,
rate-limited per study and client (`flow.check_join_rate`).

Each step view redirects to the step the participant is actually on, so the browser's back
button, a reload or a bookmarked URL can never skip consent or re-open a finished session.
Without JavaScript every form is a plain POST followed by a redirect; with htmx the next task is
swapped into `#comparison`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.crypto import salted_hmac
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from studies.duration import estimated_duration, states_duration
from studies.forms import (
    IDENTIFIER,
    ComprehensionForm,
    ConsentForm,
    JoinForm,
    JudgmentForm,
    PreviewPickForm,
)
from studies.htmx import HtmxHttpRequest
from studies.judgment import assign, flow, participants, picking
from studies.judgment.flow import (
    AlreadyJoined,
    LinkRefused,
    StudyUnavailable,
    TooManyJoins,
)
from studies.models import Assignment, ComparisonItem, Participant, Study

STEP_FOR_STATUS: dict[str, str] = {
    Participant.Status.JOINED: "consent",
    Participant.Status.CONSENTED: "instructions",
    Participant.Status.ACTIVE: "task",
}
COOKIE_SALT = "ualign.participant"


# --- Which participant is this browser? ------------------------------------------------------


COOKIE_PREFIX = "ualign_p"


def _cookie_name(study: Study) -> str:
    return f"{COOKIE_PREFIX}{study.pk}"


def _browser_participant(request: HtmxHttpRequest, study: Study) -> Participant | None:
    """The participant this browser joined as (its signed cookie), or None."""
    token = request.get_signed_cookie(
        _cookie_name(study), default="", salt=COOKIE_SALT, max_age=settings.UALIGN_PARTICIPANT_COOKIE_DAYS * 86400
    )
    if not token:
        return None
    return Participant.objects.filter(study=study, access_token=token).select_related("study").first()


def _browsers(request: HtmxHttpRequest, slug: str) -> Iterator[picking.BrowserKey]:
    """Who this browser joined as, by its valid signed participant cookies, for the study `slug`.

    The cookie's name carries the study's id (its path scopes it to the study's pages), so no
    study lookup comes first; the queries check that id against the slug.
    """
    for name in request.COOKIES:
        study_id = name[len(COOKIE_PREFIX):]
        if not (name.startswith(COOKIE_PREFIX) and study_id.isascii() and study_id.isdigit()):
            continue
        token = request.get_signed_cookie(
            name, default="", salt=COOKIE_SALT, max_age=settings.UALIGN_PARTICIPANT_COOKIE_DAYS * 86400
        )
        if token:
            yield picking.BrowserKey(int(study_id), slug, token)


def _participant_for_slug(request: HtmxHttpRequest, slug: str) -> Participant | None:
    """The participant this browser joined the study `slug` as, with the study, in one query."""
    for browser in _browsers(request, slug):
        participant = assign.find_participant(study_id=browser.study_id, slug=slug,
                                              access_token=browser.access_token)  # fmt: skip
        if participant is not None:
            return participant
    return None


def _bind(response: HttpResponse, study: Study, participant: Participant) -> HttpResponse:
    """Bind the participant to this browser: a signed, HttpOnly cookie for the study's pages only."""
    response.set_signed_cookie(
        _cookie_name(study),
        participant.access_token,
        salt=COOKIE_SALT,
        max_age=settings.UALIGN_PARTICIPANT_COOKIE_DAYS * 86400,
        path=reverse("studies:join", args=[study.slug]),
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )
    return response


def client_key(request: HtmxHttpRequest) -> str:
    """A keyed hash of the client's address (IPv6 by /64), for the join rate limit.

    Behind `UALIGN_TRUSTED_PROXY_HOPS` proxies, the address is the one the outermost trusted
    proxy saw (counted from the right of X-Forwarded-For); anything further left is the client's
    own claim and ignored.
    """
    address = request.META.get("REMOTE_ADDR", "")
    hops = settings.UALIGN_TRUSTED_PROXY_HOPS
    if hops:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return salted_hmac("ualign.join-client", address[:100]).hexdigest()[:32] if address else ""
    if ip.version == 6 and ip.ipv4_mapped is None:
        address = str(ipaddress.ip_network(f"{ip}/64", strict=False))
    elif ip.version == 6:
        address = str(ip.ipv4_mapped)
    return salted_hmac("ualign.join-client", address).hexdigest()[:32]


def _step_url(participant: Participant) -> str:
    step = STEP_FOR_STATUS.get(participant.status, "done")
    return reverse(f"studies:{step}", args=[participant.study.slug])


def _resume_url(request: HtmxHttpRequest, participant: Participant) -> str:
    return request.build_absolute_uri(
        reverse("studies:resume", args=[participant.study.slug, participant.resume_token])
    )


def _go(request: HtmxHttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _link_invalid(request: HtmxHttpRequest, *, status: int = 404, problems: list[str] | None = None,
                  missing_key: bool = False) -> HttpResponse:
    context = {"problems": problems or [], "missing_key": missing_key}
    return render(request, "studies/link_invalid.html", context, status=status)


def _unavailable(request: HtmxHttpRequest, study: Study, reason: str,
                 participant: Participant | None = None) -> HttpResponse:
    return render(request, "studies/unavailable.html", {"study": study, "reason": reason, "participant": participant})


def _not_open(request: HtmxHttpRequest, study: Study, participant: Participant, step: str,
              view: Callable) -> HttpResponse:
    """A participant's page while the study takes no one: paused or closed.

    Paused: the participant finishes the task they have open, then sees that the study is
    paused (they continue when it resumes). Closed: a participant who made a pick completes and
    goes to the completion code; anyone else sees that the study is closed.
    """
    if study.status == Study.Status.CLOSED:
        participant = participants.complete_after_close(participant=participant)
        if participant.status != Participant.Status.ACTIVE:
            return _go(request, _step_url(participant))
    elif step == "task" and assign.current_assignment(participant) is not None:
        return view(request, study, participant)
    elif request.htmx and request.GET.get("waiting"):  # the paused page's poll: nothing to do yet
        return HttpResponse(status=204)
    if request.htmx:
        return HttpResponseClientRedirect(reverse(f"studies:{step}", args=[study.slug]))
    return _unavailable(request, study, flow.closed_reason(study), participant)


def _started_elsewhere(request: HtmxHttpRequest, study: Study) -> HttpResponse:
    return render(request, "studies/started_elsewhere.html", {"study": study}, status=403)


def participant_step(step: str, *, open_when_closed: bool = False) -> Callable:
    """Load the study and this browser's participant; send them to their current step.

    A browser without a participant for this study gets the "link not valid" page (404).
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HtmxHttpRequest, slug: str, **kwargs) -> HttpResponse:
            participant = _participant_for_slug(request, slug)
            if participant is None:
                return _link_invalid(request)
            study = participant.study
            if STEP_FOR_STATUS.get(participant.status, "done") != step:
                return _go(request, _step_url(participant))
            if step != "done" and not open_when_closed and not study.is_accepting_participants:
                return _not_open(request, study, participant, step, view)
            return view(request, study, participant, **kwargs)

        # Every step page is about this participant's state right now: a browser must never show a
        # stored copy (Back after a pick would show a task already answered).
        return never_cache(wrapper)

    return decorator


# --- The site's front page ------------------------------------------------------------------------


@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    """What ualign is, for anyone who opens `/` (the admin's "View site" too), and the way in for staff."""
    return render(request, "home.html", {"is_staff": request.user.is_authenticated and request.user.is_staff})


# --- Joining -----------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
def join(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The study link `?invite=<the study's key or a single-use invite>[&PROLIFIC_PID=…&STUDY_ID=…&SESSION_ID=…]`.

    What the link must carry depends on the study's recruitment mode (`flow.check_link`).

    GET shows the landing page (no side effects); its form POSTs here to create the participant.
    A browser that already joined goes straight to its current step.
    """
    study = flow.find_study(slug)
    if study is None or study.is_pilot:  # a pilot copy is for simulated annotators only
        return _link_invalid(request)
    form = JoinForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        problems = [str(error) for errors in form.errors.values() for error in errors]
        return _link_invalid(request, status=400, problems=problems)
    pid = flow.normalized_pid(study, form.cleaned_data["PROLIFIC_PID"])
    participant = _browser_participant(request, study)
    if participant is not None and (not pid or pid == participant.external_id):
        return redirect(_step_url(participant))
    try:
        flow.check_link(study, invite=form.cleaned_data["invite"], pid=pid)  # by the study's recruitment mode
    except LinkRefused as exc:
        return _refused(request, exc)
    if pid and flow.pid_taken(study, pid):
        return _started_elsewhere(request, study)
    if request.method == "GET":
        try:
            flow.ensure_open_for_newcomers(study)
        except StudyUnavailable as exc:
            return _unavailable(request, study, exc.reason)
        return render(request, "studies/join.html", {"study": study, "form": form})
    return _create_participant(request, study, form)


def _refused(request: HtmxHttpRequest, exc: LinkRefused) -> HttpResponse:
    return _link_invalid(request, status=exc.status, problems=[exc.message] if exc.message else [],
                         missing_key=exc.missing_key)  # fmt: skip


def _create_participant(request: HtmxHttpRequest, study: Study, form: JoinForm) -> HttpResponse:
    data = form.cleaned_data
    try:
        participant = flow.join_study(
            study=study,
            prolific_pid=data["PROLIFIC_PID"],
            prolific_study_id=data["STUDY_ID"],
            prolific_session_id=data["SESSION_ID"],
            client_key=client_key(request),
            invite=data["invite"],
        )
    except LinkRefused as exc:  # an invite used or revoked since the landing page
        return _refused(request, exc)
    except StudyUnavailable as exc:
        return _unavailable(request, study, exc.reason)
    except AlreadyJoined:
        return _started_elsewhere(request, study)
    except TooManyJoins as exc:
        response = render(request, "studies/too_many_joins.html", {"study": study}, status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    return _bind(_show_step(request, study, participant), study, participant)


@never_cache
@require_http_methods(["GET", "POST"])
def resume(request: HtmxHttpRequest, slug: str, token: str) -> HttpResponse:
    """A participant's resume link: continue their session in this browser (GET asks, POST binds)."""
    study = Study.objects.filter(slug=slug).first()
    participant = None
    if study is not None and IDENTIFIER.fullmatch(token):
        participant = Participant.objects.filter(study=study, resume_token=token).select_related("study").first()
    if study is None or participant is None:
        return _link_invalid(request)
    if request.method == "GET":
        return render(request, "studies/resume.html", {"study": study})
    return _bind(redirect(_step_url(participant)), study, participant)


@require_http_methods(["GET", "POST"])
@participant_step("consent")
def consent(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    form = ConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            participant = flow.record_consent(participant=participant, accepted=form.accepted)
        except StudyUnavailable as exc:
            return _unavailable(request, study, exc.reason)
        return _show_step(request, study, participant)
    return _consent_page(request, study, form)


def _consent_page(request: HtmxHttpRequest, study: Study, form: ConsentForm, **context) -> HttpResponse:
    context |= {"study": study, "form": form, "duration": _consent_duration(study)}
    return render(request, "studies/consent.html", context)


def _consent_duration(study: Study):
    """Our estimate for the consent page, or None when the researcher's text gives its own time."""
    return None if states_duration(study.consent_text) else estimated_duration(study, measure=False)


@require_http_methods(["GET", "POST"])
@participant_step("instructions")
def instructions(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    form = _comprehension_form(study, request.POST or None)
    if request.method == "POST" and (form is None or form.is_valid()):
        answer = form.cleaned_data["answer"] if form else None
        participant, first = flow.start_tasks_with_first_task(participant=participant, comprehension_answer=answer)
        if participant.status == Participant.Status.CONSENTED:  # a fresh try, unselected
            return _instructions_page(request, study, participant, _comprehension_form(study), wrong_answer=True)
        if first is not None:  # handed out with the start (the study open, as read under the lock): shown here
            return _show_task(request, study, participant, first, done=participant.tasks_done,
                              step_url=_step_url(participant))  # fmt: skip
        return _show_step(request, study, participant)
    return _instructions_page(request, study, participant, form)


def _comprehension_form(study: Study, data=None) -> ComprehensionForm | None:
    """The instructions' comprehension question as a form, or None when the study asks none."""
    return ComprehensionForm(data, choices=study.comprehension_choices) if study.comprehension_question else None


def _show_step(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    """After a step's form is saved (join, consent, instructions), the participant's next step in
    this response, not a redirect to it: one round trip instead of two per step, for the annotator
    on a slow connection and for the server when hundreds arrive at once (#26: the three redirects'
    GETs were half of onboarding's server time). The page names its own URL (`step_url`: the
    canonical link, which annotate.js puts in the address bar with history.replaceState), so that
    a reload or a bookmark asks for the step, not the form again. A re-sent form is harmless too:
    each step's POST from a participant already past it is sent to their current step.

    Anything but the onboarding's next page (declined, a paused or closed study, no task left)
    is redirected to, as before.
    """
    step, url = STEP_FOR_STATUS.get(participant.status), _step_url(participant)
    if step is None or not study.is_accepting_participants:
        return redirect(url)
    if step == "consent":
        return _consent_page(request, study, ConsentForm(), step_url=url)
    if step == "instructions":
        return _instructions_page(request, study, participant, _comprehension_form(study), step_url=url)
    return _next_task(request, study, participant, step_url=url)


def _instructions_page(request: HtmxHttpRequest, study: Study, participant: Participant, form, *,
                       wrong_answer: bool = False, **context) -> HttpResponse:
    context |= {
        "study": study,
        "resume_url": _resume_url(request, participant),
        "form": form,
        "wrong_answer": wrong_answer,
        "attempts_left": flow.COMPREHENSION_ATTEMPTS - participant.comprehension_attempts,
    }
    return render(request, "studies/instructions.html", context)


def _task_context(
    request: HtmxHttpRequest, study: Study, participant: Participant, assignment: Assignment, *, done: int,
    form=None, error: str = "", notice: str = "",
) -> dict:
    """What the task page shows; `done`: the participant's completed tasks (they have this one open)."""
    assign.mark_rendered(assignment)
    item = assignment.item
    shown = assign.shown_in_order(assignment)
    return {
        "study": study,
        "assignment": assignment,
        "item": item,
        "shown": list(enumerate(shown, start=1)),
        "progress": assign.progress(participant, done=done, pending=True,
                                        left=getattr(assignment, "items_left", None)),
        "allow_cant_decide": study.allow_cant_decide,  # attention checks too: they look like every task (#25)
        "form": form,  # a refused pick's, for its note; None: a new task
        "error": error,
        "notice": notice,
        "resume_url": "" if request.htmx else _resume_url(request, participant),  # shown by the full page only
    }


def _next_task(request: HtmxHttpRequest, study: Study, participant: Participant, notice: str = "",
               step_url: str = "") -> HttpResponse:
    """The next task, as the full page or (htmx) as the `comparison` partial."""
    assignment = assign.assign_next_item(participant=participant, shown_now=True)
    if assignment is None:
        study.refresh_from_db(fields=["status"])
        if not study.is_accepting_participants:  # paused or closed meanwhile: the task page says which
            return _go(request, reverse("studies:task", args=[study.slug]))
        participant = picking.finish_if_out_of_tasks(participant=participant)
        if participant.status != Participant.Status.ACTIVE:
            return _go(request, _step_url(participant))
        if request.htmx:
            return HttpResponseClientRedirect(reverse("studies:task", args=[study.slug]))
        return _unavailable(request, study, "full")
    return _show_task(request, study, participant, assignment, done=participant.tasks_done, notice=notice,
                      step_url=step_url)


def _show_task(request: HtmxHttpRequest, study: Study, participant: Participant, assignment: Assignment, *,
               done: int, notice: str = "", step_url: str = "") -> HttpResponse:
    context = _task_context(request, study, participant, assignment, done=done, notice=notice)
    context["step_url"] = step_url
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
    if request.htmx and request.GET.get("waiting"):  # the paused page's poll, and the study is open again
        return HttpResponseClientRedirect(reverse("studies:task", args=[study.slug]))
    return _next_task(request, study, participant)


RETURNABLE = (Participant.Status.JOINED, *Participant.IN_PROGRESS)


@require_POST
@never_cache
def return_study(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The participant gives the study back in one click: as the admin's "returned" action does
    (`participants.return_participants`), their seat and open task are freed, their picks kept."""
    participant = _participant_for_slug(request, slug)
    if participant is None:
        return _link_invalid(request)
    if participant.status in RETURNABLE:
        participants.return_participants(participants=Participant.objects.filter(pk=participant.pk))
        participant.refresh_from_db(fields=["status"])
    return _go(request, _step_url(participant))


@require_POST
@never_cache
def submit_judgment(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Record a pick (at most once per assignment), then show the next task.

    One service call (`picking.pick`) saves the pick and hands out the next task in one
    transaction, so the round trip costs a fixed number of queries whatever the size of the
    study; it finds the browser's active participant with the assignment it locks, by the
    browser's cookie. A new pick goes straight to the next task; anything else (a replay, a bad
    choice, a task lost to a timeout, a participant at another step, an invalid form) goes the
    way of every other step page (`_pick_answer`).
    """
    form = JudgmentForm(request.POST)
    outcome = None
    if form.is_valid():
        outcome = picking.pick(
            browsers=_browsers(request, slug),
            assignment_id=form.cleaned_data["assignment"],
            position=form.cleaned_data["choice"],
            cant_decide=form.cleaned_data["cant_decide"],
            rationale=form.cleaned_data["rationale"],
            shown_now=bool(request.htmx),
        )
        result = outcome.result
        if outcome.kind is picking.OutcomeKind.SAVED and result is not None and result.participant is not None:
            return _after_pick(request, result.participant.study, result.participant, result=result)
    return _pick_answer(request, slug, form=form, outcome=outcome)


@participant_step("task", open_when_closed=True)
def _pick_answer(request: HtmxHttpRequest, study: Study, participant: Participant, *, form: JudgmentForm,
                 outcome: picking.Outcome | None) -> HttpResponse:
    """Any pick but a new one by the browser's active participant, by what became of it
    (`outcome`; None when the form was invalid and nothing was saved)."""
    assignment_id = form.cleaned_data.get("assignment")
    if not assignment_id:
        return _link_invalid(request)
    if outcome is not None:
        if outcome.kind is picking.OutcomeKind.NOT_FOUND:
            return _link_invalid(request)
        if outcome.kind is picking.OutcomeKind.NOT_OPEN:  # closed (or paused): nothing was saved
            return _not_open(request, study, participant, "task", task)
        if outcome.kind is picking.OutcomeKind.LOST:
            notice = "That task had timed out and was given to someone else, so here is a new one."
            return _after_pick(request, study, participant, notice=notice)
        if outcome.kind is not picking.OutcomeKind.INVALID:
            return _after_pick(request, study, participant, result=outcome.result)
        error = outcome.error
    elif "rationale" in form.errors:
        error = " ".join(str(e) for e in form.errors["rationale"])
        form = None  # type: ignore[assignment]  # a fresh form: an oversized note is never echoed back
    else:
        error = " ".join(str(e) for e in form.non_field_errors()) or "Choose one of the responses."
    return _pick_refused(request, study, participant, assignment_id, form, error)


def _pick_refused(request: HtmxHttpRequest, study: Study, participant: Participant, assignment_id: int,
                  form: JudgmentForm | None, error: str) -> HttpResponse:
    """The same task again with the error (400 without htmx), or the next one if it was answered."""
    assignment = participant.assignments.select_related("item__prompt").filter(pk=assignment_id).first()
    if assignment is None:
        return _link_invalid(request)
    if assignment.status != Assignment.Status.ASSIGNED:
        return _after_pick(request, study, participant)
    context = _task_context(request, study, participant, assignment, done=participant.tasks_done, form=form,
                            error=error)  # fmt: skip
    if request.htmx:
        return _partial(request, context)
    return render(request, "studies/annotate.html", context, status=400)


def _after_pick(request: HtmxHttpRequest, study: Study, participant: Participant, *,
                result: picking.JudgmentResult | None = None, notice: str = "") -> HttpResponse:
    """Where a pick leads: the next task (handed out with the pick when it was a new one), the
    completion page, or the task page by redirect without htmx (PRG: a reload never re-posts)."""
    if result is not None and result.participant is not None:
        participant = result.participant
    else:
        participant = assign.find_participant(study_id=study.pk, slug=study.slug,
                                                  access_token=participant.access_token) or participant  # fmt: skip
    if participant.status != Participant.Status.ACTIVE or not study.is_accepting_participants:
        return _go(request, _step_url(participant) if participant.status != Participant.Status.ACTIVE
                   else reverse("studies:task", args=[study.slug]))
    if not request.htmx:
        if notice:
            messages.info(request, notice)
        return redirect("studies:task", study.slug)
    if result is not None and result.next_assignment is not None and result.done is not None:
        return _show_task(request, study, participant, result.next_assignment, done=result.done)
    return _next_task(request, study, participant, notice=notice)


@require_GET
@participant_step("done")
def done(request: HtmxHttpRequest, study: Study, participant: Participant) -> HttpResponse:
    return render(request, "studies/done.html", {"study": study, "participant": participant})


# --- The researcher's preview of the annotator's path ---------------------------------------------
#
# The same templates with the study's real consent, instructions and items, for staff who may view
# the study in the admin (`studies.view_study`), live or draft. Nothing is written: no participant,
# no assignment, no judgment, and no seat is taken; every page carries the preview banner. Opening
# the study's real link still makes anyone a participant (that is how annotators arrive).

PREVIEW_STEPS = ("consent", "instructions", "task", "done")


def _preview_study(request: HtmxHttpRequest, slug: str) -> Study:
    """The study to preview, for a staff user with the admin's view permission; else 403/404."""
    if not (request.user.is_authenticated and request.user.is_staff and request.user.has_perm("studies.view_study")):
        raise PermissionDenied
    return get_object_or_404(Study, slug=slug)


def _preview_items(study: Study) -> list[ComparisonItem]:
    """One share's worth of the items an annotator could be shown, an attention check second when
    the study has them (so the researcher sees one early)."""
    items = ComparisonItem.objects.filter(study=study, needs_judgment=True).select_related("prompt").order_by("pk")
    share = max(1, study.items_per_participant)
    chosen = list(items.filter(is_attention_check=False)[:share])
    check = items.filter(is_attention_check=True).first() if study.attention_check_rate > 0 else None
    if check is not None:
        chosen.insert(min(1, len(chosen)), check)
    return chosen[:share]


def _preview_context(request: HtmxHttpRequest, study: Study, **extra) -> dict:
    return {"study": study, "preview": True, "admin_url": reverse("admin:studies_study_change", args=[study.pk]),
            **extra}  # fmt: skip


@never_cache
@require_http_methods(["GET", "POST"])
def preview(request: HtmxHttpRequest, slug: str, step: str = "consent") -> HttpResponse:
    """One step of the annotator's path as a preview: GET shows it, POST moves on without saving."""
    study = _preview_study(request, slug)
    if step not in PREVIEW_STEPS:
        raise Http404
    if step == "task":
        return _preview_task(request, study)
    if request.method == "POST" and step != "done":
        following = PREVIEW_STEPS[PREVIEW_STEPS.index(step) + 1]
        return redirect("studies:preview_step", study.slug, following)
    context = _preview_context(request, study)
    if step == "consent":
        context |= {"form": ConsentForm(), "duration": _consent_duration(study)}
    elif step == "instructions":
        context |= {"form": _comprehension_form(study), "attempts_left": flow.COMPREHENSION_ATTEMPTS}
    else:
        context["participant"] = {"status": Participant.Status.COMPLETED, "completion_code": study.completion_code}
    return render(request, f"studies/{step}.html", context)


def _preview_task(request: HtmxHttpRequest, study: Study) -> HttpResponse:
    """Task `n` of the preview (`?n=` on GET; the form's `n` on POST, which shows the next one)."""
    items = _preview_items(study)
    source = request.POST if request.method == "POST" else request.GET
    raw = source.get("n", "0")
    n = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 6 else 0
    notice = ""
    if request.method == "POST":
        form = PreviewPickForm(request.POST)
        if not form.is_valid():
            return HttpResponseBadRequest("Choose one of the responses.")
        notice = _preview_pick_notice(items[n] if n < len(items) else None, form.cleaned_data)
        n += 1
        if not request.htmx and n < len(items):  # without htmx: PRG, as the real task page does
            messages.info(request, notice)
            return redirect(f"{reverse('studies:preview_step', args=[study.slug, 'task'])}?n={n}")
    if n >= len(items):
        return _go(request, reverse("studies:preview_step", args=[study.slug, "done"]))
    item = items[n]
    shown = assign.shown_texts(item)
    context = _preview_context(
        request, study, assignment=None, item=item, shown=list(enumerate(shown, start=1)), preview_n=n,
        progress=assign.Progress(done=n, total=len(items)), notice=notice, form=None, error="",
        allow_cant_decide=study.allow_cant_decide,
    )
    if request.htmx:
        return _partial(request, context)
    return render(request, "studies/annotate.html", context)


def _preview_pick_notice(item: ComparisonItem | None, data: dict) -> str:
    """What the researcher's last (unsaved) pick was, and for an attention check whether it passed."""
    if item is None:
        return ""
    picked = "“I can't decide”" if data["cant_decide"] else f"response {data['choice']}"
    notice = f"Preview: your pick ({picked}) was not saved."
    if item.is_attention_check:
        notice += " That task was an attention check."
    return notice
