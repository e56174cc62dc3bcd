from __future__ import annotations

from django.urls import path

from studies import results_views, views

app_name = "studies"

urlpatterns: list = [
    # The annotator's flow (studies/views.py); the entry link is what researchers share.
    path("s/<slug:slug>/", views.join, name="join"),
    path("s/<slug:slug>/resume/<slug:token>/", views.resume, name="resume"),
    path("s/<slug:slug>/consent/", views.consent, name="consent"),
    path("s/<slug:slug>/instructions/", views.instructions, name="instructions"),
    path("s/<slug:slug>/task/", views.task, name="task"),
    path("s/<slug:slug>/judgments/", views.submit_judgment, name="submit_judgment"),
    path("s/<slug:slug>/done/", views.done, name="done"),
    # Results and CSV exports for staff (studies/results_views.py).
    path("research/<slug:slug>/results/", results_views.results, name="results"),
    path("research/<slug:slug>/results/plot.svg", results_views.results_plot, name="results_plot"),
    path("research/<slug:slug>/export/<slug:table>.csv", results_views.export_table, name="export"),
]
