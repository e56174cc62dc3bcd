"""The site's public URLconf (included by `ualign_web.urls`): the annotator's flow and the
researcher's results and exports. Nothing in `studies` imports it: the researcher pages that render
inside the admin are mounted by `StudyAdmin.get_urls` (studies/admin/study.py) from the views' modules,
so imports run one way, URLconf and admin → views.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from studies import researcher_views, views

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
    path("s/<slug:slug>/return/", views.return_study, name="return_study"),
    # The researcher's preview of that path: nothing saved, no place taken (staff with view permission).
    path("s/<slug:slug>/preview/", views.preview, name="preview"),
    path("s/<slug:slug>/preview/<slug:step>/", views.preview, name="preview_step"),
    # The researcher's results and CSV exports (studies/researcher_views.py).
    path("research/<slug:slug>/results/", researcher_views.results, name="results"),
    path("research/<slug:slug>/results/plot.svg", researcher_views.results_plot, name="results_plot"),
    path("research/<slug:slug>/export/<slug:table>.csv", researcher_views.export_table, name="export"),
    path("research/<slug:slug>/export/preference-pairs.<slug:fmt>", researcher_views.export_preference_pairs,
         name="export_preference_pairs"),
]

