"""The researcher's results page, its plot, and the CSV downloads (staff only)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from studies import export
from studies.models import Study
from studies.results import SOURCES, compute_results, results_plot_svg

POLL_SECONDS = 5


def _source(request: HttpRequest) -> str:
    source = request.GET.get("source", "real")
    return source if source in SOURCES else "real"


@require_GET
@staff_member_required
def results(request: HttpRequest, slug: str) -> HttpResponse:
    study = get_object_or_404(Study, slug=slug)
    source = _source(request)
    context = {
        "study": study,
        "source": source,
        "sources": list(SOURCES.items()),
        "results": compute_results(study, source=source),
        "tables": list(export.TABLES.items()),  # a dict with an "items" key confuses templates
        # Judgments arrive while a study is live (or being simulated when ready): keep polling.
        "poll_seconds": POLL_SECONDS if study.status in (Study.Status.READY, Study.Status.LIVE) else None,
    }
    template = "studies/results.html#results" if request.htmx else "studies/results.html"
    return render(request, template, context)


@require_GET
@staff_member_required
def results_plot(request: HttpRequest, slug: str) -> HttpResponse:
    study = get_object_or_404(Study, slug=slug)
    svg = results_plot_svg(compute_results(study, source=_source(request)))
    response = HttpResponse(svg, content_type="image/svg+xml")
    # The SVG is served as an image: no script in it may run even if a label were hostile.
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response["Cache-Control"] = "private, no-cache"
    return response


@require_GET
@staff_member_required
def export_table(request: HttpRequest, slug: str, table: str) -> StreamingHttpResponse:
    study = get_object_or_404(Study, slug=slug)
    if table not in export.TABLES:
        raise Http404("No such table.")
    source = request.GET.get("source")
    if source is not None and source not in SOURCES:
        source = None
    response = StreamingHttpResponse(export.iter_csv(study, table, source=source), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{export.filename(study, table)}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
