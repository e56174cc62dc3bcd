"""The admin's "Plan" page of a study: expected interval widths and the design that reaches a target.

A read-only computation, so the form is a GET (bookmarkable, no CSRF needed) and nothing is
saved. Staff reach it through the admin (`StudyAdmin.get_urls`, which requires a staff login);
the view itself requires the `studies.view_study` permission, and a pilot study (whose
judgments it reads) `studies.view_judgment` too, as the results page does. Bad input gets the form back with
its errors and status 400. The figures are those of `manage.py plan_study` (studies/estimate/plans.py).
"""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from studies.estimate.plans import (
    PlanningError,
    design_fit,
    format_half_width,
    plan_study,
)
from studies.models import Study
from studies.researcher_views import VIEW_JUDGMENT, VIEW_STUDY, study_for
from workers.stats import planning

TARGET_CHOICES = [
    ("headline", "the headline: every adversary cell (f̂(k) as the results page plots it)"),
    ("band", "the conservative band: the min over every opponent, simultaneous (30–70% more prompts)"),
]
COMPONENT_CHOICES = [
    ("auto", "a pilot's judgments if named, else this study's own (once it has some), else the literature's"),
    ("defaults", "the literature's defaults"),
]


class PlanForm(forms.Form):
    half_width = forms.DecimalField(
        min_value=Decimal("0.005"), max_value=Decimal("0.5"), decimal_places=3, initial=Decimal("0.05"),
        label="Target half-width", help_text="For example 0.05 for ±0.05 (at 95%).",
    )
    price = forms.DecimalField(
        min_value=Decimal("0"), max_digits=9, decimal_places=2, required=False,
        label="Price per participant", help_text="What each participant is paid; leave blank for no cost.",
    )
    target = forms.ChoiceField(choices=TARGET_CHOICES, initial="headline", required=False,
                               label="Intervals to bring to the target")
    components = forms.ChoiceField(choices=COMPONENT_CHOICES, initial="auto", required=False,
                                   label="Variance components from")
    pilot = forms.ModelChoiceField(
        queryset=Study.objects.none(), to_field_name="slug", required=False, label="Pilot study",
        help_text="A study whose judgments (real or simulated) say how much prompts and annotators vary.",
    )

    def __init__(self, data=None, *args, study: Study, **kwargs) -> None:
        if data is not None and data.get("target") in planning.TARGET_ALIASES:
            data = data.copy()  # a link made before issue #21 names the targets "robust" and "cell"
            data["target"] = planning.TARGET_ALIASES[data["target"]]
        super().__init__(data, *args, **kwargs)
        pilot = self.fields["pilot"]
        assert isinstance(pilot, forms.ModelChoiceField)
        pilot.queryset = Study.objects.exclude(pk=study.pk).order_by("slug")

    def clean(self):
        data = super().clean() or {}
        data["target"] = data.get("target") or "headline"  # a link may leave the choices out
        data["components"] = data.get("components") or "auto"
        if data.get("pilot") is not None and data.get("components") == "defaults":
            raise forms.ValidationError("Choose a pilot study or the literature's defaults, not both.")
        return data


def _initial() -> dict:
    return {"half_width": Decimal("0.05"), "price": None, "target": "headline", "components": "auto", "pilot": None}


@require_GET
def study_plan(request: HttpRequest, study_id: int) -> HttpResponse:
    study = study_for(request, VIEW_STUDY, pk=study_id)
    form = PlanForm(request.GET or None, study=study, initial=_initial())
    values, status, error, result = _initial(), 200, "", None
    if form.is_bound:
        if form.is_valid():
            values = form.cleaned_data
            if values["pilot"] is not None:  # its judgments' statistics: the results page's rule
                study_for(request, VIEW_STUDY, VIEW_JUDGMENT, pk=values["pilot"].pk)
        else:
            status = 400
    if status == 200:
        try:
            result = plan_study(
                study, half_width=float(values["half_width"]),
                price=None if values["price"] is None else float(values["price"]),
                pilot=values["pilot"], defaults=values["components"] == "defaults", target=values["target"],
            )
        except PlanningError as exc:
            error, status = str(exc), 400 if form.is_bound else 200
    context = {
        **admin.site.each_context(request),
        "title": f"Plan “{study}”",
        "study": study,
        "form": form,
        "error": error,
        "result": result,
        "rows": [] if result is None else _rows(result),
        "max_prompts": planning.MAX_PROMPTS,
        "fit": design_fit(study),
    }
    return render(request, "studies/study_plan.html", context, status=status)


def _rows(result) -> list[dict]:
    return [
        {**row, "band_text": format_half_width(row["band"]), "cell_text": format_half_width(row["cell"])}
        for row in result.rows(result.current)
    ]
