"""Researcher pages outside the admin's CRUD: start the pipeline, watch its jobs (htmx polling)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from studies import services
from studies.models import Job, Study

WORKER_HINT_AFTER = timedelta(seconds=30)


def _study_for(request: HttpRequest, study_id: int, perm: str) -> Study:
    if not request.user.has_perm(f"studies.{perm}_study"):
        raise PermissionDenied
    return get_object_or_404(Study, pk=study_id)


@staff_member_required
@require_POST
def prepare_study(request: HttpRequest, study_id: int) -> HttpResponse:
    """The admin's Prepare button: start (or resume) the pipeline, then show its progress."""
    study = _study_for(request, study_id, "change")
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


def job_status_context(study: Study) -> dict:
    chain = Job.objects.filter(study=study, kind=Job.Kind.PREPARE).order_by("-created_at", "-id").first()
    steps = list(chain.steps.order_by("id")) if chain else []
    active = any(not job.is_finished for job in [chain, *steps] if job is not None)
    # Queued for a while with nothing running: most likely no worker is consuming the queues.
    waiting = False
    if active and not any(s.status == Job.Status.RUNNING for s in steps):
        moments = [chain.created_at, *(t for s in steps for t in (s.heartbeat_at, s.finished_at) if t)]
        waiting = timezone.now() - max(moments) > WORKER_HINT_AFTER
    return {"study": study, "chain": chain, "steps": steps, "polling": active, "waiting_for_worker": waiting}


@staff_member_required
@require_GET
def study_jobs(request: HttpRequest, study_id: int) -> HttpResponse:
    """The study's pipeline jobs; htmx requests get the `job-status` partial, polled while active."""
    study = _study_for(request, study_id, "view")
    context = job_status_context(study)
    if request.htmx:
        return render(request, "studies/study_jobs.html#job-status", context)
    page = {**admin.site.each_context(request), **context, "title": f"Jobs of “{study}”"}
    return render(request, "studies/study_jobs.html", page)
