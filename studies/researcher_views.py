"""The researcher's pages outside the admin's CRUD: Prepare and its polled jobs, the results page,
its plot, and the CSV downloads.

Every page asks `study_for` for its study: it answers 403 unless the user holds the same model
permissions the admin would ask for (`studies.view_study` to see a study, `studies.change_study`
to act on it, and `studies.view_judgment` too for anything that shows or exports judgments), so
a staff account without them reads nothing here that the admin would refuse it. Users who are
not staff are sent to the admin's login first (`staff_member_required`).

URLs: the results and exports live in `studies/urls.py` under /research/; Prepare and the jobs
page render inside the admin, so `StudyAdmin.get_urls` mounts them (`studies.urls.admin_urlpatterns`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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
from django.views.decorators.http import require_GET, require_POST

from studies import export, services
from studies.htmx import HtmxHttpRequest
from studies.models import Job, Study
from studies.results import ORIGINS, StudyResults, results_plot_svg

WORKER_HINT_AFTER = timedelta(seconds=30)
POLL_SECONDS = 5

VIEW_STUDY = "studies.view_study"
CHANGE_STUDY = "studies.change_study"
VIEW_JUDGMENT = "studies.view_judgment"
# Export tables that hold judgments (or numbers computed from them).
JUDGMENT_TABLES = ("judgments", "summary")


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


# --------------------------------------------------------------------------------------------
# Prepare and its jobs (mounted in the admin)


@staff_member_required
@require_POST
def prepare_study(request: HttpRequest, study_id: int) -> HttpResponse:
    """The admin's Prepare button: start (or resume) the pipeline, then show its progress."""
    study = study_for(request, VIEW_STUDY, CHANGE_STUDY, pk=study_id)
    try:
        services.prepare_study(study=study)
    except services.PreparationError as exc:
        for problem in exc.problems:
            messages.error(request, problem)
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
    messages.success(request, f"Preparing “{study}”: the jobs below update as they run.")
    return HttpResponseRedirect(reverse("admin:studies_study_jobs", args=[study.pk]))


def job_status_context(study: Study) -> dict[str, Any]:
    chain = Job.objects.filter(study=study, kind=Job.Kind.PREPARE).order_by("-created_at", "-id").first()
    steps = list(chain.steps.order_by("id")) if chain else []
    active = any(not job.is_finished for job in [chain, *steps] if job is not None)
    # Queued for a while with nothing running: most likely no worker is consuming the queues.
    waiting = False
    if chain is not None and active and not any(s.status == Job.Status.RUNNING for s in steps):
        moments = [chain.created_at, *(t for s in steps for t in (s.heartbeat_at, s.finished_at) if t)]
        waiting = timezone.now() - max(moments) > WORKER_HINT_AFTER
    return {"study": study, "chain": chain, "steps": steps, "polling": active, "waiting_for_worker": waiting}


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


# --------------------------------------------------------------------------------------------
# Results and exports (/research/)


@require_GET
@staff_member_required
def results(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    study = study_for(request, VIEW_STUDY, VIEW_JUDGMENT, slug=slug)
    origin = _origin(request)
    cached = services.results_for_page(study, origin)  # a snapshot, refreshed when judgments arrive
    context = {
        "study": study,
        "origin": origin,
        "origins": list(ORIGINS.items()),
        "results": cached.results,
        "freshness": cached,
        "tables": list(export.TABLES.items()),  # a dict with an "items" key confuses templates
        # Judgments arrive while a study is live (or being simulated when ready): keep polling.
        "poll_seconds": POLL_SECONDS if study.status in (Study.Status.READY, Study.Status.LIVE)
        or not cached.is_current else None,
    }
    template = "studies/results.html#results" if request.htmx else "studies/results.html"
    return render(request, template, context)


@require_GET
@staff_member_required
def results_plot(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_for(request, VIEW_STUDY, VIEW_JUDGMENT, slug=slug)
    origin = _origin(request)
    results = services.results_for_page(study, origin).results
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
def export_table(request: HttpRequest, slug: str, table: str) -> StreamingHttpResponse:
    perms = (VIEW_STUDY, VIEW_JUDGMENT) if table in JUDGMENT_TABLES else (VIEW_STUDY,)
    study = study_for(request, *perms, slug=slug)
    if table not in export.TABLES:
        raise Http404("No such table.")
    origin = request.GET.get("source")
    if origin is not None and origin not in ORIGINS:
        origin = None
    response = StreamingHttpResponse(export.iter_csv(study, table, origin=origin), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{export.filename(study, table)}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
