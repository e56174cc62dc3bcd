"""The researcher's pages outside the admin's CRUD: Prepare and its polled jobs, the lifecycle
buttons (go live, pause, resume, close) and "copy as a new draft" with their confirmation pages,
the polled places and participants, the results page, its plot, and the CSV downloads.

Every page asks `study_for` for its study: it answers 403 unless the user holds the same model
permissions the admin would ask for (`studies.view_study` to see a study, `studies.change_study`
to act on it, and `studies.view_judgment` too for anything that shows or exports judgments), so
a staff account without them reads nothing here that the admin would refuse it. Users who are
not staff are sent to the admin's login first (`staff_member_required`).

URLs: the results and exports live in `studies/urls.py` under /research/; Prepare, the jobs
page and the other pages that render inside the admin are mounted by the admin
(`StudyAdmin.researcher_urls`), which imports this module, as the URLconf does.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from studies import candidate_import, services
from studies.estimate import export, preference_pairs, question
from studies.estimate.plot import results_plot_svg
from studies.estimate.results import (
    INCLUDE_UNREVIEWED,
    ORIGINS,
    StudyResults,
    scope_key,
)
from studies.htmx import HtmxHttpRequest
from studies.job_rows import chain_rows
from studies.judgment import participants
from studies.models import Job, Study
from studies.simulated_annotators import SimulationError
from studies.steps.preference_sources import KIND_DOCS

WORKER_HINT_AFTER = timedelta(seconds=30)
POLL_SECONDS = 5
# Participants come and go (or picks land) in these statuses: the places figure keeps polling.
POLLED_STATUSES = (Study.Status.READY, Study.Status.LIVE, Study.Status.PAUSED)

VIEW_STUDY = "studies.view_study"
CHANGE_STUDY = "studies.change_study"
ADD_STUDY = "studies.add_study"
VIEW_JUDGMENT = "studies.view_judgment"
# Export tables that hold judgments (or numbers computed from them; pairs may come from judgments).
JUDGMENT_TABLES = ("judgments", "summary", "pairs")


def study_for(request: HttpRequest, *perms: str, pk: int | None = None, slug: str | None = None) -> Study:
    """The study a researcher page is about, if the user holds every one of `perms`; else 403.

    The one permission check of the researcher pages: the admin's model permissions, not
    `is_staff` alone. Permissions are checked before the lookup, so a missing study and a
    forbidden one can't be told apart by someone without them.
    """
    if not perms or not request.user.has_perms(perms):
        raise PermissionDenied
    return get_object_or_404(Study, pk=pk) if pk is not None else get_object_or_404(Study, slug=slug)


def _origin(request: HttpRequest) -> str:
    """Whose judgments to show: the `source` query parameter (kept for shared links), default real."""
    origin = request.GET.get("source", "real")
    return origin if origin in ORIGINS else "real"


def _include_unreviewed(request: HttpRequest) -> bool:
    """The `unreviewed=include` switch: count participants rejected in review or ended for failed
    attention checks (left out by default; `studies.estimate.results.judgments_for`)."""
    return request.GET.get("unreviewed") == INCLUDE_UNREVIEWED


# --------------------------------------------------------------------------------------------
# Prepare and its jobs (mounted in the admin)


def _start_jobs(request: HttpRequest, study: Study, start: Callable[..., object], started: str) -> HttpResponse:
    """Start pipeline jobs (`start(study=...)`), then show their progress; on a setup problem, back
    to the study's change page with each problem as a message."""
    try:
        start(study=study)
    except services.PreparationError as exc:
        for problem in exc.problems:
            messages.error(request, problem)
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
    messages.success(request, started)
    return HttpResponseRedirect(reverse("admin:studies_study_jobs", args=[study.pk]))


@staff_member_required
@require_POST
def prepare_study(request: HttpRequest, study_id: int) -> HttpResponse:
    """The admin's Prepare button: start (or resume) the pipeline, then show its progress."""
    study = study_for(request, VIEW_STUDY, CHANGE_STUDY, pk=study_id)
    return _start_jobs(request, study, services.prepare_study,
                       f"Preparing “{study}”: the jobs below update as they run.")  # fmt: skip


@staff_member_required
@require_POST
def generate_only(request: HttpRequest, study_id: int) -> HttpResponse:
    """The admin's "Generate only": run just the pool step, then show its progress."""
    study = study_for(request, VIEW_STUDY, CHANGE_STUDY, pk=study_id)
    return _start_jobs(request, study, services.generate_only,
                       f"Generating the candidates of “{study}”; it stays a draft. Then upload the utilities "
                       "and press Prepare once.")  # fmt: skip


class CandidateImportForm(forms.Form):
    file = forms.FileField(help_text=candidate_import.FORMAT_HELP)

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.UALIGN_MAX_UPLOAD_BYTES:
            raise ValidationError(f"The file is larger than {settings.UALIGN_MAX_UPLOAD_BYTES // 2**20} MB.")
        return upload


@staff_member_required
@require_http_methods(["GET", "POST"])
def import_candidates(request: HtmxHttpRequest, study_id: int) -> HttpResponse:
    """Bring your own candidates (`studies.candidate_import`): every row checked, all saved or none.

    Files past UALIGN_IMPORT_BACKGROUND_BYTES go to a worker (`services.start_candidate_import`),
    as prompt imports do, and this page shows its progress (`?job=`), polled while it runs.
    """
    study = study_for(request, VIEW_STUDY, CHANGE_STUDY, pk=study_id)
    here = reverse("admin:studies_study_import_candidates", args=[study.pk])
    form = CandidateImportForm(request.POST or None, request.FILES or None)
    report, refused = None, candidate_import.study_problems(study)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > settings.UALIGN_IMPORT_BACKGROUND_BYTES:  # too big for a web request
            try:
                started = services.start_candidate_import(study=study, filename=upload.name, data=upload.read())
            except (services.DesignFixed, services.ImportBusy) as exc:
                refused = [str(exc)]
            else:
                return HttpResponseRedirect(f"{here}?job={started.pk}")
        else:
            report = candidate_import.import_candidates(study=study, filename=upload.name, data=upload.read())
            if report.ok:
                messages.success(request, f"Imported {report.candidates} candidates for {report.prompts_created} new "
                                          f"and {report.prompts_matched} existing prompts into “{study}”.")
                return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
    job = _import_job(request, study, Job.Kind.IMPORT_CANDIDATES)
    context = {"study": study, "form": form, "report": report, "job": job, "here": here, "refused": refused}
    if request.htmx and job is not None:
        return render(request, "admin/studies/study/import_candidates.html#import-job", context)
    context |= {**admin.site.each_context(request), "opts": Study._meta, "title": f"Import candidates into “{study}”"}
    status = 400 if report else 409 if request.method == "POST" and refused else 200
    return render(request, "admin/studies/study/import_candidates.html", context, status=status)


def _import_job(request: HttpRequest, study: Study, kind: str) -> Job | None:
    """The study's import job named by `?job=` (digits only), if there is one of this kind."""
    job_id = request.GET.get("job", "")
    if not (job_id.isascii() and job_id.isdigit() and len(job_id) <= 18):
        return None
    return study.jobs.filter(pk=int(job_id), kind=kind).first()


IMPORT_PAGES: dict[str, str] = {Job.Kind.IMPORT_PROMPTS: "admin:studies_study_import_prompts",
                Job.Kind.IMPORT_CANDIDATES: "admin:studies_study_import_candidates"}


@staff_member_required
@require_POST
def retry_import(request: HttpRequest, study_id: int, job_id: int) -> HttpResponse:
    """The import page's "Retry" on a job whose worker stopped (`services.retry_stale_import`)."""
    study = study_for(request, VIEW_STUDY, CHANGE_STUDY, pk=study_id)
    job = get_object_or_404(Job, pk=job_id, study=study, kind__in=list(IMPORT_PAGES))
    try:
        services.retry_stale_import(job=job)
    except services.NotStale as exc:
        messages.warning(request, str(exc))
    else:
        messages.success(request, f"The import of {job.params.get('filename', '')} is queued again.")
    return HttpResponseRedirect(reverse(IMPORT_PAGES[job.kind], args=[study.pk]) + f"?job={job.pk}")


@staff_member_required
@require_POST
def start_pilot(request: HttpRequest, study_id: int) -> HttpResponse:
    """The admin's "Pilot with simulated annotators": a pilot copy, its annotators queued, its results shown."""
    study = study_for(request, VIEW_STUDY, CHANGE_STUDY, pk=study_id)
    try:
        job = services.start_pilot(study=study)
    except (services.PilotError, SimulationError) as exc:
        messages.error(request, f"No pilot for “{study}”: {exc}")
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
    assert job.study is not None  # the simulation job belongs to the pilot
    messages.success(request, f"Pilot “{job.study.slug}”: {job.params['annotators']} simulated annotators queued "
                              f"(job #{job.pk}); “{study}” itself is untouched.")
    return HttpResponseRedirect(reverse("studies:results", args=[job.study.slug]) + "?source=simulated")


@staff_member_required
@require_POST
def delete_pilot(request: HttpRequest, study_id: int) -> HttpResponse:
    """Delete a pilot copy (its participants and judgments with it); back to the original study."""
    pilot = study_for(request, VIEW_STUDY, CHANGE_STUDY, pk=study_id)
    original_id = pilot.pilot_of_id
    try:
        services.delete_pilot(pilot=pilot)
    except services.PilotError as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[pilot.pk]))
    messages.success(request, f"Deleted the pilot “{pilot.slug}”.")
    return HttpResponseRedirect(reverse("admin:studies_study_change", args=[original_id]))


def job_status_context(study: Study) -> dict[str, Any]:
    chain = Job.objects.filter(study=study, kind=Job.Kind.PREPARE).order_by("-created_at", "-id").first()
    steps = list(chain.steps.order_by("id")) if chain else []
    active = any(not job.is_finished for job in [chain, *steps] if job is not None)
    # Queued for a while with nothing running: most likely no worker is consuming the queues.
    waiting = False
    if chain is not None and active and not any(s.status == Job.Status.RUNNING for s in steps):
        moments = [chain.created_at, *(t for s in steps for t in (s.heartbeat_at, s.finished_at) if t)]
        waiting = timezone.now() - max(moments) > WORKER_HINT_AFTER
    rows = chain_rows(chain, steps) if chain is not None else []
    return {"study": study, "chain": chain, "steps": steps, "rows": rows, "polling": active,
            "waiting_for_worker": waiting}


@staff_member_required
@require_GET
def study_jobs(request: HtmxHttpRequest, study_id: int) -> HttpResponse:
    """The study's pipeline jobs; htmx requests get the `job-status` partial, polled while active."""
    study = study_for(request, VIEW_STUDY, pk=study_id)
    context = job_status_context(study)
    if request.htmx:
        return render(request, "studies/study_jobs.html#job-status", context)
    page = {**admin.site.each_context(request), **context, "title": f"Jobs of “{study}”"}
    return render(request, "studies/study_jobs.html", page)


def _admin_page(request: HttpRequest, template: str, study: Study, title: str, **context: Any) -> HttpResponse:
    page = {**admin.site.each_context(request), "study": study, "opts": Study._meta, "title": title, **context}
    return render(request, template, page)


@staff_member_required
@require_http_methods(["GET", "POST"])
def study_status(request: HttpRequest, study_id: int, action: str) -> HttpResponse:
    """A lifecycle button of the study's page: GET asks to confirm, POST makes the move.

    Every rule is checked by `services.change_study_status`; the page shows what it would refuse.
    """
    study = study_for(request, VIEW_STUDY, CHANGE_STUDY, pk=study_id)
    move = services.LIFECYCLE_ACTIONS.get(action)
    if move is None:
        raise Http404("No such move.")
    if request.method == "POST":
        try:
            study = services.change_study_status(study=study, action=action)
        except services.LifecycleError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"“{study}” is now {study.get_status_display().lower()}.")
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
    blocking, warnings = services.preflight_problems(study) if move.target == Study.Status.LIVE else ([], [])
    return _admin_page(
        request, "studies/study_confirm.html", study, f"{move.label}: “{study}”",
        heading=f"{move.label}?", explanation=move.explanation, button=move.label,
        problem=services.lifecycle_problem(study, action), action_url=request.path,
        blocking=blocking, warnings=warnings,
    )


@staff_member_required
@require_http_methods(["GET", "POST"])
def copy_study(request: HttpRequest, study_id: int) -> HttpResponse:
    """"Copy as a new draft study": GET asks to confirm, POST copies (`services.copy_study_as_draft`)."""
    study = study_for(request, VIEW_STUDY, ADD_STUDY, pk=study_id)
    if request.method == "POST":
        copy = services.copy_study_as_draft(study=study)
        messages.success(request, f"“{copy}” is a new draft with the settings, policies, preference sources and "
                                  f"prompts of “{study}”. Change its design, then press Prepare.")
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[copy.pk]))
    return _admin_page(
        request, "studies/study_confirm.html", study, f"Copy “{study}” as a new draft study",
        heading="Copy as a new draft study?", explanation=services.COPY_EXPLANATION, button="Copy as a new draft",
        problem="", action_url=request.path,
    )


@staff_member_required
@require_GET
def study_places(request: HtmxHttpRequest, study_id: int) -> HttpResponse:
    """Places filled out of the target and participants by status, polled on the study's page."""
    study = study_for(request, VIEW_STUDY, pk=study_id)
    changelist = reverse("admin:studies_participant_changelist") + f"?study__id__exact={study.pk}"
    context = {
        "places": participants.places(study),
        "changelist": changelist,
        "poll_seconds": POLL_SECONDS if study.status in POLLED_STATUSES else None,
    }
    if request.htmx:
        return render(request, "studies/study_places.html#places", {"study": study, **context})
    return _admin_page(request, "studies/study_places.html", study, f"Places and participants of “{study}”", **context)


# --------------------------------------------------------------------------------------------
# Results and exports (/research/)


@require_GET
@staff_member_required
def results(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    study = study_for(request, VIEW_STUDY, VIEW_JUDGMENT, slug=slug)
    origin, include_unreviewed = _origin(request), _include_unreviewed(request)
    # a snapshot per origin and switch, refreshed when judgments arrive
    cached = services.results_for_page(study, scope_key(origin, include_unreviewed))
    context = {
        "study": study,
        "status_text": _status_text(study),
        "origin": origin,
        "include_unreviewed": include_unreviewed,
        "unreviewed_param": f"&unreviewed={INCLUDE_UNREVIEWED}" if include_unreviewed else "",
        "origins": list(ORIGINS.items()),
        "results": cached.results,
        # the headline is the annotators' adversary (studies/estimate/screened.py), the model's beside it
        "annotators_adversary": study.adversary == Study.Adversary.ANNOTATORS,
        "question": question.panel(study),  # the pre-registered question's live answer (issue #22)
        "freshness": cached,
        "tables": list(export.TABLES.items()),  # a dict with an "items" key confuses templates
        # Judgments arrive while a study is live (or being simulated when ready): keep polling.
        "poll_seconds": POLL_SECONDS if study.status in POLLED_STATUSES or not cached.is_current else None,
    }
    template = "studies/results.html#results" if request.htmx else "studies/results.html"
    return render(request, template, context)


@staff_member_required
@require_GET
def preference_source_kinds(request: HttpRequest) -> HttpResponse:
    """Every kind of preference source with its params and an example (`preference_sources.KIND_DOCS`)."""
    if not request.user.has_perm(VIEW_STUDY):
        raise PermissionDenied
    page = {**admin.site.each_context(request), "title": "Preference source kinds", "kinds": KIND_DOCS}
    return render(request, "studies/source_kinds.html", page)


def _status_text(study: Study) -> str:
    """The study's status for the results page; a pilot says how its simulated annotators are doing
    (a pilot stays live when they finish, so "Live" would read as if it were still running)."""
    if not study.is_pilot:
        return study.get_status_display()
    job = study.jobs.filter(kind=Job.Kind.SIMULATE).order_by("-created_at", "-id").first()
    if job is None:
        return "Pilot, not run yet"
    if job.status == Job.Status.DONE:
        when = timezone.localtime(job.finished_at).strftime("%Y-%m-%d %H:%M") if job.finished_at else ""
        return f"Pilot finished{f' at {when}' if when else ''}: its simulated annotators are done"
    if job.status == Job.Status.FAILED:
        return "Pilot stopped: its simulated annotators failed (see the Jobs page)"
    return "Pilot running on simulated annotators"


@require_GET
@staff_member_required
def results_plot(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_for(request, VIEW_STUDY, VIEW_JUDGMENT, slug=slug)
    origin, include_unreviewed = _origin(request), _include_unreviewed(request)
    results = services.results_for_page(study, scope_key(origin, include_unreviewed)).results
    empty = StudyResults(study_id=study.pk, origin=origin, confidence=0.95, n_judgments=0, n_analysed=0,
                         n_excluded=0, n_annotators=0)  # the first computation is still running
    svg = results_plot_svg(results or empty)
    response = HttpResponse(svg, content_type="image/svg+xml")
    # The SVG is served as an image: no script in it may run even if a label were hostile.
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response["Cache-Control"] = "private, no-cache"
    return response


@require_GET
@staff_member_required
def export_preference_pairs(request: HttpRequest, slug: str, fmt: str) -> HttpResponse | StreamingHttpResponse:
    """The picks as DPO preference pairs (`studies/estimate/preference_pairs.py`), JSON Lines or Parquet."""
    study = study_for(request, VIEW_STUDY, VIEW_JUDGMENT, slug=slug)
    if fmt not in preference_pairs.FORMATS:
        raise Http404("No such format: choose jsonl or parquet.")
    origin = _origin(request)
    response: HttpResponse | StreamingHttpResponse
    if fmt == "jsonl":
        response = StreamingHttpResponse(preference_pairs.iter_jsonl(study, origin=origin),
                                         content_type=preference_pairs.FORMATS[fmt])
    else:
        buffer = io.BytesIO()
        preference_pairs.write_parquet(study, buffer, origin=origin)
        response = HttpResponse(buffer.getvalue(), content_type=preference_pairs.FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="{preference_pairs.filename(study, fmt, origin)}"'
    return response


@require_GET
@staff_member_required
def export_table(request: HttpRequest, slug: str, table: str) -> StreamingHttpResponse:
    perms = (VIEW_STUDY, VIEW_JUDGMENT) if table in JUDGMENT_TABLES else (VIEW_STUDY,)
    study = study_for(request, *perms, slug=slug)
    if table not in export.TABLES:
        raise Http404("No such table.")
    origin = request.GET.get("source")
    if origin is not None and origin not in ORIGINS:
        origin = None
    chunks = export.iter_csv(study, table, origin=origin, include_unreviewed=_include_unreviewed(request))
    response = StreamingHttpResponse(chunks, content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{export.filename(study, table)}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
