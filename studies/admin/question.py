"""The study page's pre-registered question (issue #22): filled in before the study goes live, frozen
after; beside it, the live answer and, once answered, the record of the stop and what it saved."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from studies.estimate import question as live_question
from studies.models import Policy, Study, StudyQuestion
from studies.models.question import QUESTION_FIELDS


class StudyQuestionForm(forms.ModelForm):
    """Refuses any change to a pre-registered field once the study has gone live, with the reason;
    the model's `clean` names every problem with the question itself (`StudyQuestion.problems`)."""

    class Meta:
        model = StudyQuestion
        fields = [*QUESTION_FIELDS, "price_per_participant"]

    def clean(self):
        cleaned = super().clean()
        study = Study.objects.filter(pk=self.instance.study_id).first() if self.instance.study_id else None
        changed = [name for name in self.changed_data if name in QUESTION_FIELDS]
        if study is not None and changed and StudyQuestion.frozen_message(study):
            raise ValidationError(StudyQuestion.frozen_message(study), code="frozen")
        return cleaned


def live_answer_html(question: StudyQuestion) -> str:
    """The question, its answer now with the confidence sequence's numbers, and the saving once answered."""
    live = live_question.evaluate(question)
    readings = format_html_join(
        "", "<li>{}: {} [{}, {}] over {} prompts</li>",
        ((r.label, f"{r.estimate:.3f}", f"{r.low:.3f}", f"{r.high:.3f}", r.n_prompts) for r in live.readings),
    )
    saving = live_question.saving(question, live)
    return format_html(
        '<div id="question-live"><p><strong>{}</strong></p><p class="question-answer {}">{}</p><ul>{}</ul>{}</div>',
        question.text, "answered" if live.answered else "open", live.sentence, readings,
        format_html('<p id="question-saving">{}</p>', saving.sentence) if saving else "",
    )


def stop_record_text(question: StudyQuestion) -> str:
    """When the periodic check found it answered, at how many judgments, and what it did."""
    if question.answered_at is None:
        every = settings.UALIGN_QUESTION_SECONDS
        when = f"every {every} s" if every > 0 else "never (UALIGN_QUESTION_SECONDS is 0)"
        return (f"Not answered yet. While the study is live, the question is checked {when}; the first answer is "
                "recorded here" + (" and the study paused." if question.on_answer == "pause" else "."))
    when = timezone.localtime(question.answered_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    did = "the study was paused by its stopping rule" if question.paused_study else "the study ran on (as chosen)"
    return (f"Answered at {when}, after {question.answered_judgments:,} judgments: {question.answer_text} "
            f"Then {did}.")


class StudyQuestionInline(admin.StackedInline):
    model = StudyQuestion
    form = StudyQuestionForm
    extra = 0
    max_num = 1
    verbose_name_plural = "pre-registered question (issue #22: state it before going live; frozen after)"
    fields = [*QUESTION_FIELDS, "price_per_participant", "live_answer", "stop_record"]
    readonly_fields = ["live_answer", "stop_record"]

    def get_formset(self, request: HttpRequest, obj: Study | None = None, **kwargs):
        """Only the study's own policies can be chosen (the model refuses others too)."""
        formset = super().get_formset(request, obj, **kwargs)
        for name in ("policy", "other_policy"):
            field = formset.form.base_fields.get(name)
            if isinstance(field, forms.ModelChoiceField):
                field.queryset = Policy.objects.filter(study=obj) if obj is not None else Policy.objects.none()
        return formset

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return not (obj is not None and StudyQuestion.frozen_message(obj)) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return not (obj is not None and StudyQuestion.frozen_message(obj)) and super().has_delete_permission(request, obj)

    @admin.display(description="live answer")
    def live_answer(self, question: StudyQuestion) -> str:
        if not question.pk:
            return "Save the question to see its live answer."
        return live_answer_html(question)

    @admin.display(description="stop")
    def stop_record(self, question: StudyQuestion) -> str:
        return stop_record_text(question) if question.pk else "–"
