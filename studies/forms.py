"""Forms of the participant flow. They validate input only; the services decide what it means."""

from __future__ import annotations

from typing import Any

from django import forms


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

    assignment = forms.IntegerField(min_value=1, widget=forms.HiddenInput)
    choice = forms.IntegerField(min_value=1, max_value=99, required=False)
    cant_decide = forms.BooleanField(required=False)
    rationale = forms.CharField(
        required=False,
        max_length=5000,
        label="Why? (optional)",
        widget=forms.Textarea(attrs={"rows": 2, "maxlength": 5000}),
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if not data.get("cant_decide") and data.get("choice") is None and "choice" not in self.errors:
            raise forms.ValidationError("Choose one of the responses.")
        return data
