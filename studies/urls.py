from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import URLPattern, path

from studies import planning_views, researcher_views, views

app_name = "studies"

urlpatterns: list[URLPattern] = [
    path("", views.home, name="home"),
    # The annotator's flow (studies/views.py); the entry link is what researchers share.
    path("s/<slug:slug>/", views.join, name="join"),
    path("s/<slug:slug>/resume/<slug:token>/", views.resume, name="resume"),
    path("s/<slug:slug>/consent/", views.consent, name="consent"),
    path("s/<slug:slug>/instructions/", views.instructions, name="instructions"),
    path("s/<slug:slug>/task/", views.task, name="task"),
    path("s/<slug:slug>/judgments/", views.submit_judgment, name="submit_judgment"),
    path("s/<slug:slug>/done/", views.done, name="done"),
    # The researcher's results and CSV exports (studies/researcher_views.py).
    path("research/<slug:slug>/results/", researcher_views.results, name="results"),
    path("research/<slug:slug>/results/plot.svg", researcher_views.results_plot, name="results_plot"),
    path("research/<slug:slug>/export/<slug:table>.csv", researcher_views.export_table, name="export"),
]


def admin_urlpatterns(admin_view: Callable[[Any], Any]) -> list[URLPattern]:
    """The researcher pages shown inside the admin (studies/researcher_views.py), mounted by
    `StudyAdmin.get_urls` under /admin/studies/study/ with the admin's URL names."""
    return [
        path("<int:study_id>/prepare/", admin_view(researcher_views.prepare_study), name="studies_study_prepare"),
        path("<int:study_id>/jobs/", admin_view(researcher_views.study_jobs), name="studies_study_jobs"),
        path("<int:study_id>/plan/", admin_view(planning_views.study_plan), name="studies_study_plan"),
        path("<int:study_id>/generate/", admin_view(researcher_views.generate_only), name="studies_study_generate"),
        path("<int:study_id>/import-candidates/", admin_view(researcher_views.import_candidates),
             name="studies_study_import_candidates"),
        path("<int:study_id>/imports/<int:job_id>/retry/", admin_view(researcher_views.retry_import),
             name="studies_study_retry_import"),
        path("<int:study_id>/pilot/", admin_view(researcher_views.start_pilot), name="studies_study_pilot"),
        path("<int:study_id>/delete-pilot/", admin_view(researcher_views.delete_pilot), name="studies_study_delete_pilot"),
        path("<int:study_id>/status/<slug:action>/", admin_view(researcher_views.study_status),
             name="studies_study_status"),
        path("<int:study_id>/copy/", admin_view(researcher_views.copy_study), name="studies_study_copy"),
        path("<int:study_id>/places/", admin_view(researcher_views.study_places), name="studies_study_places"),
    ]
