"""A study's pre-registered question and its stopping rule (issue #22, docs/theory.md §11).

The researcher states, before the study goes live, the one question it answers: "is policy P's
f̂(k) at least x?" (threshold), "is A's f̂(k) above B's?" (difference) or "every headline to ±h"
(precision), with its error rate α and what to do once it is answered (pause the study, or only
tell the researcher). Once the study has gone live the question is frozen: changing it after
seeing data would make the error rate a fiction. The live answer is computed from the judgments by
`studies.estimate.question`; the periodic check (`studies.tasks.check_questions`) records the
moment it was first answered (`answered_at`, `answered_judgments`, `answer`, `answer_text`) and,
when asked, pauses the study then (`studies.services.stop_if_answered`).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from studies.models.study import Policy, Study

#: What the pre-registration fixes; the price (a bookkeeping figure) and the record are not in it.
QUESTION_FIELDS = ("kind", "policy", "other_policy", "k", "threshold", "margin", "half_width", "alpha", "on_answer")
#: The statuses in which a study has gone live: its question can no longer change.
FROZEN_STATUSES = ("live", "paused", "closed")
MAX_ALPHA = 0.2


class StudyQuestion(models.Model):
    class Kind(models.TextChoices):
        THRESHOLD = "threshold", "Threshold: is policy P's f̂(k) at least x?"
        DIFFERENCE = "difference", "Difference: is policy A's f̂(k) above policy B's?"
        PRECISION = "precision", "Precision: every headline f̂(k) to ±h"

    class OnAnswer(models.TextChoices):
        PAUSE = "pause", "Pause the study"
        TELL = "tell", "Only tell me (the study runs on)"

    class Answer(models.TextChoices):
        YES = "yes", "Yes"
        NO = "no", "No"
        EQUIVALENT = "equivalent", "Within the margin"
        REACHED = "reached", "Precision reached"

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="question")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # RESTRICT, not PROTECT: a policy named here can't be deleted on its own (the admin says why),
    # but deleting the study deletes both.
    policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.RESTRICT, related_name="+",
        help_text="Threshold: the policy P. Difference: policy A (the one asked to be above).",
    )
    other_policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.RESTRICT, related_name="+",
        help_text="Difference only: policy B.",
    )
    k = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Threshold and difference: one of the study's k values.")
    threshold = models.FloatField(null=True, blank=True, help_text="Threshold only: x, between 0 and 1 (for example 0.8).")
    margin = models.FloatField(
        default=0.0, help_text="Threshold and difference: a practical margin δ fixed now. When the interval lies within "
        "±δ of x (or of no difference) the answer is “within the margin”, so a study at the boundary stops too. 0 turns it off.",
    )
    half_width = models.FloatField(null=True, blank=True, help_text="Precision only: h, for example 0.05.")
    alpha = models.FloatField(
        "error rate α", default=0.05,
        help_text="The chance, over the whole study however often it is checked, of a wrong answer (at most 0.2).",
    )
    on_answer = models.CharField("when answered", max_length=8, choices=OnAnswer.choices, default=OnAnswer.PAUSE)
    price_per_participant = models.DecimalField(
        max_digits=9, decimal_places=2, null=True, blank=True,
        help_text="The planner's price per participant (the Plan page's): the saving is counted at it ÷ items per "
        "participant per judgment. Blank: the saving is given in judgments only. Not part of the pre-registration.",
    )
    # The record of the stop (set once, by the periodic check): when, at how many judgments, what.
    answered_at = models.DateTimeField(null=True, blank=True, editable=False)
    answered_judgments = models.PositiveIntegerField(null=True, blank=True, editable=False)
    answer = models.CharField(max_length=16, choices=Answer.choices, blank=True, editable=False)
    answer_text = models.TextField(blank=True, editable=False)
    paused_study = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "pre-registered question"
        constraints = [
            models.CheckConstraint(condition=Q(alpha__gt=0) & Q(alpha__lte=MAX_ALPHA), name="question_alpha_range"),
            models.CheckConstraint(condition=Q(margin__gte=0) & Q(margin__lt=1), name="question_margin_range"),
            models.CheckConstraint(
                condition=Q(half_width__isnull=True) | (Q(half_width__gt=0) & Q(half_width__lte=0.5)),
                name="question_half_width_range",
            ),
            models.CheckConstraint(
                condition=Q(threshold__isnull=True) | (Q(threshold__gt=0) & Q(threshold__lt=1)),
                name="question_threshold_range",
            ),
            models.CheckConstraint(condition=Q(kind__in=["threshold", "difference", "precision"]), name="question_kind_valid"),
            models.CheckConstraint(condition=Q(on_answer__in=["pause", "tell"]), name="question_on_answer_valid"),
        ]

    def __str__(self) -> str:
        return self.text

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Refuses (ValidationError) to change a pre-registered field of a study that has gone live."""
        message = self.frozen_message(Study.objects.get(pk=self.study_id))
        if message and self.changed_fields():
            raise ValidationError(message)
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        message = self.frozen_message(Study.objects.get(pk=self.study_id))
        if message:
            raise ValidationError(message)
        return super().delete(*args, **kwargs)

    @property
    def text(self) -> str:
        """The question in one sentence, as the pages show it."""
        policy, other = (p.name if (p := self.policy) else "?"), (p.name if (p := self.other_policy) else "?")
        if self.kind == self.Kind.THRESHOLD:
            return f"Is {policy}'s f̂({self.k}) at least {self.threshold:g}?"
        if self.kind == self.Kind.DIFFERENCE:
            return f"Is {policy}'s f̂({self.k}) above {other}'s?"
        return f"Is every headline f̂(k) known to ±{self.half_width:g}?"

    # --- validation: every problem named, against the study's policies and k values -------------

    def clean(self) -> None:
        errors = self.problems()
        if errors:
            raise ValidationError(errors)

    def problems(self) -> dict[str, list[str]]:
        """Field → what is wrong with it (empty when the question is well posed for its study)."""
        errors: dict[str, list[str]] = {}

        def add(name: str, message: str) -> None:
            errors.setdefault(name, []).append(message)

        if self.alpha is not None and not 0 < self.alpha <= MAX_ALPHA:
            add("alpha", f"The error rate α must be above 0 and at most {MAX_ALPHA:g}, such as 0.05.")
        if self.margin is None or not 0 <= self.margin < 1:
            add("margin", "The margin must be at least 0 and below 1, such as 0.05 (0 turns it off).")
        used: tuple[str, ...] = _USED.get(str(self.kind), ())
        for name, label in _LABELS.items():
            if name in used and getattr(self, _attname(name)) is None:
                add(name, f"A {self.kind} question needs {label}.")
            elif name not in used and getattr(self, _attname(name)) is not None:
                add(name, f"A {self.kind} question has no {label}: leave it blank.")
        if self.kind == self.Kind.PRECISION and self.margin:
            add("margin", "A precision question has no margin: leave it at 0.")
        self._check_against_study(add)
        return errors

    def _check_against_study(self, add: Any) -> None:
        study = self.study if self.study_id else None
        for name in ("policy", "other_policy"):
            policy = getattr(self, name) if getattr(self, f"{name}_id") else None
            if policy is not None and study is not None and policy.study_id != study.pk:
                add(name, f"“{policy}” is not a policy of “{study}”: choose one of its policies.")
        if self.policy_id and self.policy_id == self.other_policy_id:
            add("other_policy", "Policies A and B must differ.")
        if self.k is not None and study is not None and self.k not in (study.k_values or []):
            values = ", ".join(str(k) for k in study.k_values or []) or "none yet"
            add("k", f"k = {self.k} is not one of the study's k values ({values}).")
        if self.threshold is not None and not 0 < self.threshold < 1:
            add("threshold", "The threshold x must lie strictly between 0 and 1, such as 0.8.")
        if self.half_width is not None and not 0 < self.half_width <= 0.5:
            add("half_width", "The half-width h must be above 0 and at most 0.5, such as 0.05.")

    # --- the freeze -------------------------------------------------------------------------------

    @staticmethod
    def frozen_message(study: Study) -> str:
        """Why the question of `study` can't change now, or "" while it can (before it goes live)."""
        if study.status not in FROZEN_STATUSES:
            return ""
        return (f"“{study}” has gone live ({study.get_status_display().lower()}), so its pre-registered question is "
                "frozen: changing the question, its α or its action after seeing data would void the error rate it "
                "promises. Copy the study as a new draft to ask another question.")

    def changed_fields(self) -> list[str]:
        """The pre-registered fields that differ from the saved row (all of them for a new question)."""
        if self.pk is None:
            return list(QUESTION_FIELDS)
        saved = StudyQuestion.objects.filter(pk=self.pk).values(*(_attname(f) for f in QUESTION_FIELDS)).first()
        if saved is None:
            return list(QUESTION_FIELDS)
        return [f for f in QUESTION_FIELDS if saved[_attname(f)] != getattr(self, _attname(f))]


_LABELS = {"policy": "a policy", "other_policy": "a second policy (B)", "k": "a k value", "threshold": "a threshold x",
           "half_width": "a half-width h"}
_USED: dict[str, tuple[str, ...]] = {
    StudyQuestion.Kind.THRESHOLD: ("policy", "k", "threshold"),
    StudyQuestion.Kind.DIFFERENCE: ("policy", "other_policy", "k"),
    StudyQuestion.Kind.PRECISION: ("half_width",),
}


def _attname(name: str) -> str:
    return f"{name}_id" if name in ("policy", "other_policy") else name
