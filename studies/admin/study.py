"""The researcher back office, study side: studies and their design (prompts, generator models,
preference sources, policies) are edited here; what the pipeline produces (candidates, fits,
items, preference pairs) is read-only, so the record of a study can't be edited by accident."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from studies import researcher_views, services
from studies.admin.common import ReadOnlyAdmin, ReadOnlyInline, rounded
from studies.admin.question import StudyQuestionInline, stop_record_text
from studies.candidate_import import imported_candidates
from studies.estimate import planning_views, plans
from studies.estimate.export import TABLES
from studies.forms import KValuesField, name_the_required_field
from studies.importing import import_prompts
from studies.judgment import flow
from studies.judgment.flow import seats_taken
from studies.models import (
    Candidate,
    ComparisonItem,
    Doctor,
    GeneratorModel,
    ItemCandidate,
    Job,
    Policy,
    PolicyFit,
    PreferencePair,
    PreferenceSource,
    Prompt,
    Study,
)
from studies.simulated_annotators import SimulationError
from studies.steps.doctor import import_pairs_csv
from studies.steps.held_out_check import best_held_out_warning
from studies.steps.preference_sources import (
    CSV_HELP,
    csv_problems,
    params_help_html,
    source_params_problems,
)
from studies.validation import text_problem
from workers.doctor.curve import history_svg


def doctor_summary(policy: Policy) -> str:
    """A doctor policy's doctors: status, step and loss of each (LLMdoctor training progress)."""
    if policy.kind != Policy.Kind.DOCTOR or not policy.pk:
        return ""
    doctors = list(policy.doctors.order_by("position"))
    if not doctors:
        return "Not trained yet: Prepare trains its doctors."
    return format_html_join(
        mark_safe("<br>"), "doctor {}: {} · step {}/{} · loss {} · key <code>{}</code>",
        ((d.position, d.get_status_display(), d.step, d.steps, "–" if d.loss is None else f"{d.loss:.4g}",
          d.key[:16] or "–") for d in doctors),
    )  # fmt: skip


def guarantee(policy: Policy) -> str:
    """The policy's regularisation flag (β > 0: not the equilibrium, no k/(k+1) guarantee), or "–"."""
    return policy.regularisation_note or "–"


def _design_fixed(study: Study | None) -> bool:
    return study is not None and bool(study.design_fixed_reason())


class DesignInlineMixin:
    """An inline that is part of the study's design (policies, preference sources): read-only
    once the design is fixed (`Study.design_fixed_reason`)."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return not _design_fixed(obj) and super().has_add_permission(request, obj)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return not _design_fixed(obj) and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return not _design_fixed(obj) and super().has_delete_permission(request, obj)  # type: ignore[misc]


class DesignPartAdmin(admin.ModelAdmin):
    """The standalone admin of a part of a study's design (prompts, policies, preference sources):
    rows of a study whose design is fixed can't be added, changed or deleted (the bulk delete
    action asks `has_delete_permission` of every row too)."""

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return not (obj is not None and _design_fixed(obj.study)) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return not (obj is not None and _design_fixed(obj.study)) and super().has_delete_permission(request, obj)

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        class GuardedForm(form):  # type: ignore[valid-type, misc]
            def clean(self):
                cleaned = super().clean()
                study = cleaned.get("study")
                if study is not None and study.design_fixed_message():
                    self.add_error("study", study.design_fixed_message())
                return cleaned

        return GuardedForm


class PolicyInline(DesignInlineMixin, admin.TabularInline):
    model = Policy
    extra = 0
    fields = ["name", "kind", "params", "generator", "guarantee", "doctors"]
    readonly_fields = ["guarantee", "doctors"]

    @admin.display(description="guarantee")
    def guarantee(self, policy: Policy) -> str:
        return guarantee(policy)

    @admin.display(description="LLMdoctor")
    def doctors(self, policy: Policy) -> str:
        return doctor_summary(policy)


class PreferenceSourceForm(forms.ModelForm):
    """Checks params per kind and, for the CSV kind, every row of the utilities against the
    study's candidates (`studies.steps.preference_sources.csv_problems`), with readable errors and line numbers."""

    data_file = forms.FileField(
        required=False,
        label="Or upload the CSV",
        help_text="A UTF-8 .csv file; it replaces the data above.",
    )

    class Meta:
        model = PreferenceSource
        fields = ["kind", "weight", "params", "data"]
        help_texts = {"data": "For the CSV kind: " + CSV_HELP}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["params"].help_text = params_help_html()  # one source of truth: KIND_DOCS

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        kind, params = cleaned.get("kind"), cleaned.get("params")
        if kind and params is not None:
            problems = source_params_problems(kind, params)
            if problems:
                self.add_error("params", problems)
        upload = cleaned.get("data_file")
        if upload:
            text = self._read_upload(upload)
            if text is None:
                return cleaned
            cleaned["data"] = text
        problem = text_problem(cleaned.get("data") or "")
        if problem:  # NUL can't be stored, and control characters have no place in a CSV
            self.add_error("data_file" if upload else "data", f"The CSV {problem}.")
            return cleaned
        if kind == PreferenceSource.Kind.CSV:
            problems = csv_problems(self._study(cleaned), cleaned.get("data") or "")
            if problems:
                self.add_error("data_file" if upload else "data", problems)
        return cleaned

    def _read_upload(self, upload) -> str | None:
        if upload.size > settings.UALIGN_MAX_UPLOAD_BYTES:
            self.add_error("data_file", f"The file is larger than {settings.UALIGN_MAX_UPLOAD_BYTES // 2**20} MB.")
            return None
        try:
            return upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            self.add_error("data_file", "The file is not UTF-8 text.")
            return None

    def _study(self, cleaned) -> Study | None:
        if cleaned.get("study") is not None:  # the standalone source admin
            return cleaned["study"]
        study_id = self.instance.study_id  # set by the study's inline formset
        return Study.objects.filter(pk=study_id).first() if study_id else None


class PreferenceSourceInline(DesignInlineMixin, admin.StackedInline):
    model = PreferenceSource
    form = PreferenceSourceForm
    extra = 0
    fields = ["kind", "weight", "params", "data", "data_file"]

    def get_fields(self, request: HttpRequest, obj=None):
        if _design_fixed(obj):  # read-only: no upload field, and no page-long CSV
            return ["kind", "weight", "params"]
        return super().get_fields(request, obj)


class PairsImportForm(forms.Form):
    file = forms.FileField(help_text="A UTF-8 .csv file with columns prompt, chosen, rejected (optional weight, source).")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.UALIGN_MAX_UPLOAD_BYTES:
            raise ValidationError(f"The file is larger than {settings.UALIGN_MAX_UPLOAD_BYTES // 2**20} MB.")
        return upload


class PromptImportForm(forms.Form):
    file = forms.FileField(help_text="A .csv file with a 'text' column, or a .jsonl file with one object per line.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.UALIGN_MAX_UPLOAD_BYTES:
            raise ValidationError(f"The file is larger than {settings.UALIGN_MAX_UPLOAD_BYTES // 2**20} MB.")
        return upload


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "status", "prompt_count", "k_values", "pilot_of", "created_at"]
    list_filter = ["status", ("pilot_of", admin.EmptyFieldListFilter)]
    search_fields = ["title", "slug"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["status", "invite_token", "participant_links", "created_at", "updated_at", "prompt_tools",
                       "results_links", "pair_tools", "places", "design_lock"]
    # What makes the items: read-only once the design is fixed (Study.design_fixed_reason).
    DESIGN_FIELDS = ["generator", "pool_size", "k_values", "opponent_outputs", "replicates", "annotations_per_item",
                     "attention_check_rate", "held_out_fraction", "seed", "adversary", "screened_opponents"]
    inlines = [PolicyInline, PreferenceSourceInline, StudyQuestionInline]
    actions = ["prepare_selected", "run_simulated_annotators", "download_judgments", "create_invites"]
    # Django 6's default, opted into now: a bare host in the redirect URL means https.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        (None, {"fields": ["title", "slug", "status", "participant_links", "places", "prompt_tools", "results_links",
                           "pair_tools"]}),
        ("Annotators see", {"fields": ["consent_text", "instructions"]}),
        (
            "Design",
            {
                "fields": [
                    "design_lock",
                    "generator",
                    "pool_size",
                    "k_values",
                    "opponent_outputs",
                    "replicates",
                    "annotations_per_item",
                    "items_per_participant",
                    "max_participants",
                    "seed",
                    "held_out_fraction",
                    "adversary",
                    "screened_opponents",
                ]
            },
        ),
        (
            "Quality",
            {
                "fields": [
                    "attention_check_rate",
                    "max_attention_failures",
                    "allow_cant_decide",
                    "cant_decide_analysis",
                    "comprehension_question",
                    "comprehension_choices",
                    "comprehension_answer",
                    "assignment_timeout",
                ]
            },
        ),
        ("Adaptive allocation", {"fields": ["adaptive_allocation", "allocation_half_width"]}),
        ("Recruitment and completion", {"fields": ["recruitment", "invite_token", "completion_code",
                                                   "per_participant_codes", "completion_redirect_url"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(_prompt_count=Count("prompts"))

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return fields + self.DESIGN_FIELDS if _design_fixed(obj) else fields

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "k_values":  # "1, 3" as typed, not only JSON
            kwargs.update(form_class=KValuesField, help_text="For example 1, 2, 4.")
        elif db_field.name == "completion_code":  # or a completion URL: Go live's pre-flight asks for one of them
            kwargs.update(required=False, help_text="What participants enter on the recruiting platform to show they "
                          "finished. It may stay blank when the completion URL carries it; Go live refuses a study "
                          "with neither.")
        return name_the_required_field(super().formfield_for_dbfield(db_field, request, **kwargs),
                                       str(getattr(db_field, "verbose_name", db_field.name)))

    def get_fieldsets(self, request: HttpRequest, obj=None):
        """Pool size does nothing for a pool of imported candidates: not shown there."""
        if obj is None or not imported_candidates(obj).exists():
            return super().get_fieldsets(request, obj)
        return [(name, {**opts, "fields": [f for f in opts["fields"] if f != "pool_size"]})
                for name, opts in super().get_fieldsets(request, obj)]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        study = self.get_object(request, object_id)
        question = getattr(study, "question", None) if study else None
        if study and request.method == "GET" and question is not None and question.paused_study and study.status == "paused":
            self.message_user(request, f"Paused by its pre-registered question's stopping rule. {stop_record_text(question)}",
                              messages.WARNING)
        extra = {"lifecycle_actions": services.lifecycle_actions(study) if study else [],
                 "design_fit": plans.design_fit(study) if study else None,
                 "held_out_warning": best_held_out_warning(study) if study else ""}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    @admin.display(description="design")
    def design_lock(self, study: Study) -> str:
        message = study.design_fixed_message()
        if not message:
            return "Editable while the study is a draft without comparison items; fixed once it is prepared."
        return format_html('<span class="design-fixed" id="design-fixed">{} <a href="{}">Copy as a new draft study</a></span>',
                           message, reverse("admin:studies_study_copy", args=[study.pk]))

    @admin.display(description="places filled")
    def places(self, study: Study) -> str:
        if not study.pk:
            return "-"
        target = study.max_participants or "no limit"
        return format_html('<span id="places-summary">{} / {}</span> · <a href="{}">participants</a>',
                           seats_taken(study), target,
                           reverse("admin:studies_participant_changelist") + f"?study__id__exact={study.pk}")

    @admin.display(description="prompts", ordering="_prompt_count")
    def prompt_count(self, study: Study) -> int:
        return study._prompt_count  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="prompts")
    def prompt_tools(self, study: Study) -> str:
        if not study.pk:
            return "Save the study first, then import prompts."
        prompts = reverse("admin:studies_prompt_changelist") + f"?study__id__exact={study.pk}"
        return format_html(
            '{} prompts · <a href="{}">view</a> · <a href="{}">import from CSV or JSONL</a>',
            study.prompts.count(),
            prompts,
            reverse("admin:studies_study_import_prompts", args=[study.pk]),
        )

    @admin.display(description="LLMdoctor pairs")
    def pair_tools(self, study: Study) -> str:
        if not study.pk:
            return "-"
        return format_html(
            '{} preference pairs · <a href="{}">import from CSV</a> · <a href="{}" download>export CSV</a>',
            study.preference_pairs.count(),
            reverse("admin:studies_study_import_pairs", args=[study.pk]),
            reverse("studies:export", args=[study.slug, "pairs"]),
        )

    @admin.display(description="links for annotators")
    def participant_links(self, study: Study) -> str:
        if not study.pk:
            return "Save the study first."
        base = settings.SITE_URL.rstrip("/")
        invites = reverse("admin:studies_invite_changelist") + f"?study__id__exact={study.pk}"
        if study.recruitment == Study.Recruitment.INVITES:
            return format_html('Single-use invite links: {} unused · <a href="{}">list, add or revoke</a> (the '
                               "shared key no longer joins).", study.invites.filter(used_at__isnull=True,
                               revoked_at__isnull=True).count(), invites)  # fmt: skip
        copy = '<button type="button" class="copy-link button" data-copy="{}" title="Copy the link">Copy</button>'
        return format_html(
            "Lab volunteers: <code>{}</code> " + copy + "<br>Prolific (study URL): <code>{}</code> " + copy + "<br>"
            "Both carry the study's key; a link without it is refused.",
            *(link for link in (base + study.participant_link(), base + study.participant_link(prolific=True))
              for _ in (0, 1)),
        )

    @admin.display(description="results")
    def results_links(self, study: Study) -> str:
        if not study.pk:
            return "-"
        downloads = format_html_join(
            " · ", '<a href="{}" download>{}</a>', ((reverse("studies:export", args=[study.slug, t]), t) for t in TABLES)
        )
        return format_html(
            '<a href="{}">win rates, f(k) plot and quality</a> · CSV: {}',
            reverse("studies:results", args=[study.slug]),
            downloads,
        )

    @admin.action(description="Download the judgments of the selected study (CSV)")
    def download_judgments(self, request: HttpRequest, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one study to download its judgments.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("studies:export", args=[queryset.get().slug, "judgments"]))

    def get_urls(self):
        extra = [
            path(
                "<int:study_id>/import-prompts/",
                self.admin_site.admin_view(self.import_prompts_view),
                name="studies_study_import_prompts",
            ),
            path(
                "<int:study_id>/import-pairs/",
                self.admin_site.admin_view(self.import_pairs_view),
                name="studies_study_import_pairs",
            ),
            *self.researcher_urls(),
        ]
        return extra + super().get_urls()

    def researcher_urls(self) -> list[URLPattern]:
        """The researcher pages that render inside the admin (studies/researcher_views.py and the
        planner's page), under /admin/studies/study/ with the admin's URL names. Mounted here, not
        in studies/urls.py, so that the admin imports the views and nothing imports the URLconf."""
        view = self.admin_site.admin_view
        return [
            path("<int:study_id>/prepare/", view(researcher_views.prepare_study), name="studies_study_prepare"),
            path("<int:study_id>/jobs/", view(researcher_views.study_jobs), name="studies_study_jobs"),
            path("<int:study_id>/plan/", view(planning_views.study_plan), name="studies_study_plan"),
            path("<int:study_id>/generate/", view(researcher_views.generate_only), name="studies_study_generate"),
            path("<int:study_id>/import-candidates/", view(researcher_views.import_candidates),
                 name="studies_study_import_candidates"),
            path("<int:study_id>/imports/<int:job_id>/retry/", view(researcher_views.retry_import),
                 name="studies_study_retry_import"),
            path("<int:study_id>/pilot/", view(researcher_views.start_pilot), name="studies_study_pilot"),
            path("<int:study_id>/delete-pilot/", view(researcher_views.delete_pilot), name="studies_study_delete_pilot"),
            path("<int:study_id>/status/<slug:action>/", view(researcher_views.study_status),
                 name="studies_study_status"),
            path("<int:study_id>/copy/", view(researcher_views.copy_study), name="studies_study_copy"),
            path("<int:study_id>/places/", view(researcher_views.study_places), name="studies_study_places"),
            path("preference-source-kinds/", view(researcher_views.preference_source_kinds),
                 name="studies_preference_source_kinds"),
        ]

    @admin.action(description="Create 10 single-use invite links for each selected study", permissions=["change"])
    def create_invites(self, request: HttpRequest, queryset) -> HttpResponseRedirect | None:
        for study in queryset:
            flow.create_invites(study=study, count=10)
        self.message_user(request, "Created 10 invite links per study (they join studies recruited by invites).")
        return HttpResponseRedirect(reverse("admin:studies_invite_changelist"))

    @admin.action(description="Prepare selected studies (generate, populate, fit, build items)", permissions=["change"])
    def prepare_selected(self, request: HttpRequest, queryset) -> None:
        for study in queryset:
            try:
                services.prepare_study(study=study)
            except services.PreparationError as exc:
                self.message_user(request, f"“{study}” was not prepared: {exc}", messages.ERROR)
            except ValidationError as exc:
                self.message_user(request, f"“{study}” was not prepared: {' '.join(exc.messages)}", messages.ERROR)
            else:
                self.message_user(request, f"Preparing “{study}”.", messages.SUCCESS)

    @admin.action(description="Run simulated annotators (fills the remaining quota; marked simulated)",
                  permissions=["change"])
    def run_simulated_annotators(self, request: HttpRequest, queryset) -> None:
        for study in queryset:
            try:
                job = services.start_simulation(study=study)
            except SimulationError as exc:
                self.message_user(request, f"No simulation for “{study}”: {exc}", messages.ERROR)
            else:
                results = reverse("studies:results", args=[study.slug]) + "?source=simulated"
                self.message_user(request, format_html(
                    "Queued {} simulated annotators for “{}” (job #{}). Watch the <a href=\"{}\">results</a> fill in.",
                    job.params["annotators"], study, job.pk, results,
                ), messages.SUCCESS)

    def import_prompts_view(self, request: HttpRequest, study_id: int) -> HttpResponse:
        study = get_object_or_404(Study, pk=study_id)
        if not self.has_change_permission(request, study):
            return HttpResponse(status=403)
        form = PromptImportForm(request.POST or None, request.FILES or None)
        report, busy, here = None, "", reverse("admin:studies_study_import_prompts", args=[study.pk])
        fixed = study.design_fixed_message()  # only a draft takes prompts (the services check it again)
        if request.method == "POST" and not fixed and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                if upload.size > settings.UALIGN_IMPORT_BACKGROUND_BYTES:  # too big for a web request
                    started = services.start_prompt_import(study=study, filename=upload.name, data=upload.read())
                    return HttpResponseRedirect(f"{here}?job={started.pk}")
                report = import_prompts(study=study, filename=upload.name, data=upload.read())
            except services.DesignFixed as exc:
                fixed = str(exc)
            except services.ImportBusy as exc:
                busy = str(exc)
            if report is not None and report.ok:
                self.message_user(request, f"Imported {report.created} prompts into “{study}”.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
        job_id = request.GET.get("job", "")
        job: Job | None = None
        if re.fullmatch(r"[0-9]{1,18}", job_id, flags=re.ASCII):
            job = study.jobs.filter(pk=int(job_id), kind=Job.Kind.IMPORT_PROMPTS).first()
        context = {"study": study, "form": form, "report": report, "job": job, "here": here, "fixed": fixed,
                   "busy": busy}
        if getattr(request, "htmx", False) and job is not None:
            return TemplateResponse(request, "admin/studies/prompt/import.html#import-job", context)
        context |= {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": study,
            "title": f"Import prompts into “{study}”",
        }
        refused = request.method == "POST" and bool(fixed or busy)
        return TemplateResponse(request, "admin/studies/prompt/import.html", context, status=409 if refused else 200)


    def import_pairs_view(self, request: HttpRequest, study_id: int) -> HttpResponse:
        """Import LLMdoctor preference pairs: every row checked; they replace the study's imported pairs."""
        study = get_object_or_404(Study, pk=study_id)
        if not self.has_change_permission(request, study):
            return HttpResponse(status=403)
        form = PairsImportForm(request.POST or None, request.FILES or None)
        report = None
        if request.method == "POST" and form.is_valid():
            report = import_pairs_csv(study, form.cleaned_data["file"].read())
            if report.ok:
                self.message_user(request, f"Imported {report.created} preference pairs into “{study}”.",
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:studies_study_change", args=[study.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta, "original": study, "study": study, "form": form, "report": report,
            "title": f"Import preference pairs into “{study}”",
        }  # fmt: skip
        refused = report is not None and bool(study.design_fixed_message())
        return TemplateResponse(request, "admin/studies/study/import_pairs.html", context, status=409 if refused else 200)


@admin.register(Prompt)
class PromptAdmin(DesignPartAdmin):
    list_display = ["short_text", "external_id", "study", "created_at"]
    list_display_links = ["short_text"]
    list_filter = ["study"]
    search_fields = ["text", "external_id"]
    list_select_related = ["study"]

    @admin.display(description="text", ordering="text")
    def short_text(self, prompt: Prompt) -> str:
        return Truncator(" ".join(prompt.text.split())).chars(90)


@admin.register(GeneratorModel)
class GeneratorModelAdmin(admin.ModelAdmin):
    list_display = ["name", "model_ref", "revision", "batch_size", "seed"]


@admin.register(PreferenceSource)
class PreferenceSourceAdmin(DesignPartAdmin):
    form = PreferenceSourceForm
    fields = ["study", "kind", "weight", "params", "data", "data_file"]
    list_display = ["study", "kind", "weight"]
    list_filter = ["kind"]


class DoctorInline(ReadOnlyInline):
    model = Doctor
    fields = ["position", "status", "step", "steps", "loss", "pairs", "resumed_from", "seconds", "training_curve",
              "key", "path"]
    readonly_fields = ["training_curve"]

    @admin.display(description="training curve")
    def training_curve(self, doctor: Doctor) -> str:
        # history_svg writes only numbers it formats itself and fixed labels (workers/doctor/curve.py).
        return mark_safe(history_svg(doctor.history or []))  # noqa: S308


@admin.register(Policy)
class PolicyAdmin(DesignPartAdmin):
    list_display = ["name", "kind", "study", "guarantee"]
    list_filter = ["kind", "study"]
    inlines = [DoctorInline]

    @admin.display(description="guarantee")
    def guarantee(self, policy: Policy) -> str:
        return guarantee(policy)


@admin.register(PreferencePair)
class PreferencePairAdmin(ReadOnlyAdmin):
    list_display = ["id", "study", "pair_set", "short_prompt", "short_chosen", "short_rejected", "weight", "source"]
    list_filter = ["study", "pair_set"]
    search_fields = ["prompt_text", "chosen", "rejected"]
    list_select_related = ["study"]

    @admin.display(description="prompt")
    def short_prompt(self, pair: PreferencePair) -> str:
        return pair.prompt_text[:60]

    @admin.display(description="chosen")
    def short_chosen(self, pair: PreferencePair) -> str:
        return pair.chosen[:80]

    @admin.display(description="rejected")
    def short_rejected(self, pair: PreferencePair) -> str:
        return pair.rejected[:80]


@admin.register(Candidate)
class CandidateAdmin(ReadOnlyAdmin):
    # The id is what a utilities CSV names a candidate by (candidate_id, as in the candidates export).
    list_display = ["candidate_id", "prompt", "sample_index", "short_text", "multiplicity", "token_count",
                    "is_attention_check"]
    list_display_links = ["candidate_id"]
    list_filter = ["prompt__study", "is_attention_check"]
    search_fields = ["text"]
    list_select_related = ["prompt"]

    @admin.display(description="candidate_id", ordering="id")
    def candidate_id(self, candidate: Candidate) -> int:
        return candidate.pk

    @admin.display(description="text")
    def short_text(self, candidate: Candidate) -> str:
        return candidate.text[:100]


@admin.register(PolicyFit)
class PolicyFitAdmin(ReadOnlyAdmin):
    list_display = ["policy", "prompt", "k", "certificate_kind", "certificate_shown", "converged", "predicted_shown",
                    "pool_shown", "held_out_shown", "held_out_candidates", "guarantee"]
    list_filter = ["policy__study", "policy__kind", "k", "converged"]
    list_select_related = ["policy", "prompt"]
    # The detail page shows the same rounded figures (raw floats read 0.30000000000000004).
    fields = readonly_fields = ("policy", "prompt", "k", "certificate_kind", "certificate_shown", "converged",
                                "predicted_shown", "pool_shown", "held_out_shown", "held_out_candidates",
                                "probabilities_shown", "candidate_ids")

    @admin.display(description="certificate", ordering="certificate")
    def certificate_shown(self, fit: PolicyFit) -> str:
        return rounded(fit.certificate, 4)

    @admin.display(description="predicted robust win rate", ordering="predicted_robust_win_rate")
    def predicted_shown(self, fit: PolicyFit) -> str:
        return rounded(fit.predicted_robust_win_rate)

    @admin.display(description="on the pool", ordering="pool_robust_win_rate")
    def pool_shown(self, fit: PolicyFit) -> str:
        return rounded(fit.pool_robust_win_rate)

    @admin.display(description="on held-out texts", ordering="held_out_robust_win_rate")
    def held_out_shown(self, fit: PolicyFit) -> str:
        return rounded(fit.held_out_robust_win_rate)

    @admin.display(description="held-out candidates")
    def held_out_candidates(self, fit: PolicyFit) -> str:
        ids = (fit.solver_stats or {}).get("held_out_candidates") or []
        if not ids:
            return "none"
        url = reverse("admin:studies_candidate_changelist")
        return format_html_join(", ", '<a href="{}?id__in={}">#{}</a>', ((url, pk, pk) for pk in ids))

    @admin.display(description="probabilities")
    def probabilities_shown(self, fit: PolicyFit) -> str:
        return ", ".join(rounded(p) for p in fit.probabilities or [])

    @admin.display(description="guarantee")
    def guarantee(self, fit: PolicyFit) -> str:
        return guarantee(fit.policy)


class ItemCandidateInline(ReadOnlyInline):
    model = ItemCandidate
    fields = ["slot", "candidate", "count_policy", "count_opponent"]


@admin.register(ComparisonItem)
class ComparisonItemAdmin(ReadOnlyAdmin):
    list_display = ["id", "prompt", "policy", "k", "opponent_label", "m", "is_attention_check", "needs_judgment",
                    "predicted_win_rate"]
    list_filter = ["study", "policy", "k", "opponent_label", "is_attention_check", "needs_judgment"]
    list_select_related = ["prompt", "policy"]
    inlines = [ItemCandidateInline]
