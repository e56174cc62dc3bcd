"""Forms of the participant flow. They validate input only; the services decide what it means.

Every field an annotator's browser sends passes through one of these (never `int()` on raw
POST data): numbers are ASCII digits of bounded length, identifiers a bounded character set,
free text loses control characters and has a bounded length.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from studies.validation import strip_controls, text_problem

# Prolific ids are 24 hex characters; lab tools send similar opaque ids.
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
RATIONALE_MAX = 5000


class AsciiIntegerField(forms.Field):
    """A whole number written with the digits 0-9 only (no signs, spaces or other scripts'
    digits), at most `max_digits` long, so nothing reaches the database that it can't hold."""

    def __init__(self, *, min_value: int, max_value: int, max_digits: int = 18, **kwargs) -> None:
        self.max_digits = max_digits
        super().__init__(**kwargs)
        self.validators += [MinValueValidator(min_value), MaxValueValidator(max_value)]

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        if not re.fullmatch(rf"[0-9]{{1,{self.max_digits}}}", text, flags=re.ASCII):
            raise forms.ValidationError("Enter a whole number written with the digits 0-9.", code="invalid")
        return int(text)


class IdentifierField(forms.CharField):
    """An opaque id from a link (Prolific's PID, STUDY_ID, SESSION_ID)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(required=False, max_length=200, **kwargs)

    def validate(self, value) -> None:
        super().validate(value)
        if value and text_problem(value):
            raise forms.ValidationError(f"{self.label} {text_problem(value)}.", code="control")
        if value and not IDENTIFIER.fullmatch(value):
            raise forms.ValidationError(
                f"{self.label} may only hold letters, digits and _ . : - (up to 200).", code="invalid"
            )


class JoinForm(forms.Form):
    """The study link's parameters (the landing page's GET) and the join POST's hidden fields."""

    invite = forms.CharField(required=False, max_length=64, label="The study's key")
    PROLIFIC_PID = IdentifierField(label="PROLIFIC_PID")
    STUDY_ID = IdentifierField(label="STUDY_ID")
    SESSION_ID = IdentifierField(label="SESSION_ID")

    def clean_invite(self) -> str:
        value = self.cleaned_data["invite"]
        return value if IDENTIFIER.fullmatch(value or "") else ""


class CleanTextField(forms.CharField):
    """Free text with control characters, NUL and lone surrogates removed (tab and newlines kept)."""

    def to_python(self, value):
        value = super().to_python(value)
        return strip_controls(value) if value else value


class ConsentForm(forms.Form):
    decision = forms.ChoiceField(choices=[("accept", "I agree"), ("decline", "I do not agree")])

    @property
    def accepted(self) -> bool:
        return self.cleaned_data["decision"] == "accept"


class ComprehensionForm(forms.Form):
    answer = forms.ChoiceField(widget=forms.RadioSelect, label="Your answer")

    def __init__(self, *args, choices: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["answer"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(choice, choice) for choice in choices]


class JudgmentForm(forms.Form):
    """One pick: the displayed position (1..n), or can't-decide, for one assignment."""

    assignment = AsciiIntegerField(min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput)
    choice = AsciiIntegerField(min_value=1, max_value=99, max_digits=2, required=False)
    cant_decide = forms.BooleanField(required=False)
    rationale = CleanTextField(
        required=False,
        max_length=RATIONALE_MAX,
        label="Why? (optional)",
        widget=forms.Textarea(attrs={"rows": 2, "maxlength": RATIONALE_MAX}),
        error_messages={"max_length": f"Your note is longer than {RATIONALE_MAX} characters; shorten it and choose again."},
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if not data.get("cant_decide") and data.get("choice") is None and "choice" not in self.errors:
            raise forms.ValidationError("Choose one of the responses.")
        return data


class KValuesField(forms.JSONField):
    """The study's k values as a researcher types them: "1, 3" (or JSON, "[1, 3]")."""

    def to_python(self, value: Any) -> Any:
        text = value.strip() if isinstance(value, str) else None
        if text and not text.startswith("["):
            try:
                return [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
            except ValueError:
                raise forms.ValidationError(
                    "Enter the k values as whole numbers separated by commas, such as 1, 2, 4.", code="invalid"
                ) from None
        return super().to_python(value)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in value):
            return ", ".join(str(k) for k in value)
        return super().prepare_value(value)


def name_the_required_field(field: forms.Field | None, label: str) -> forms.Field | None:
    """"This field is required." says which field, for the messages shown away from the field."""
    if field is not None:
        field.error_messages["required"] = f"{label[:1].upper()}{label[1:]} is required."
    return field


class PreviewPickForm(JudgmentForm):
    """A pick in the researcher's preview: the same controls, no assignment (nothing is saved)."""

    assignment = None  # type: ignore[assignment]
