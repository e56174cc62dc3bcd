"""The researcher back office, people side: participants (review, returns, the bonus list),
invites, assignments, judgments and jobs, all read-only but for the researcher's decisions."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from studies import allocation
from studies.admin.common import ReadOnlyAdmin
from studies.judgment import flow, participants
from studies.models import (
    AllocationRun,
    Assignment,
    Invite,
    Job,
    Judgment,
    Participant,
)


class FailedAttentionFilter(admin.SimpleListFilter):
    title = "attention checks"
    parameter_name = "failed_attention"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("yes", "Failed at least one"), ("no", "Failed none")]

    def queryset(self, request: HttpRequest, queryset):
        if self.value() == "yes":
            return queryset.filter(attention_failures__gt=0)
        if self.value() == "no":
            return queryset.filter(attention_failures=0)
        return queryset


@admin.register(Participant)
class ParticipantAdmin(ReadOnlyAdmin):
    """Read-only rows, with the actions a Prolific researcher needs (studies/judgment/participants.py):
    approve, reject, mark returned (frees the seat and open assignments), and the approve/reject
    list as CSV with PROLIFIC_PIDs."""

    list_display = ["pseudonym", "external_id", "study", "status", "review_status", "tasks", "attention",
                    "created_at", "last_active_at", "time_on_task", "review_reason", "is_simulated"]
    list_filter = ["study", "status", "review_status", FailedAttentionFilter, "is_simulated",
                   ("created_at", admin.DateFieldListFilter), ("last_active_at", admin.DateFieldListFilter)]
    search_fields = ["pseudonym", "external_id"]
    list_select_related = ["study"]
    exclude = ["access_token", "resume_token", "client_key"]
    readonly_fields = ["resume_link"]
    actions = ["mark_approved", "mark_rejected", "mark_returned", "export_review_list", "export_bonus_list"]

    def get_queryset(self, request: HttpRequest):
        return participants.with_picks(super().get_queryset(request))

    def has_review_permission(self, request: HttpRequest) -> bool:
        """Reviewing changes only the verdict and seat of a participant, never their picks."""
        return request.user.has_perm("studies.change_participant")

    @admin.display(description="picks", ordering="picks")
    def picks(self, participant: Participant) -> int:
        return participant.picks  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="tasks done", ordering="tasks_done")
    def tasks(self, participant: Participant) -> str:
        """Done of the share they were offered: a partial completer reads "2 of 10", not just "2"."""
        return f"{participant.tasks_done} of {participant.study.items_per_participant}"

    @admin.display(description="attention checks passed")
    def attention(self, participant: Participant) -> str:
        work = participants.Work.of(participant)
        return f"{work.attention_passed} of {work.attention_shown}"

    @admin.display(description="time on task", ordering="task_ms")
    def time_on_task(self, participant: Participant) -> str:
        task_ms = participant.task_ms  # type: ignore[attr-defined]  # annotated by get_queryset
        return "-" if task_ms is None else f"{task_ms / 1000:.0f} s"

    @admin.display(description="resume link")
    def resume_link(self, participant: Participant) -> str:
        """For a participant who lost the browser they started in: it continues their session."""
        path = reverse("studies:resume", args=[participant.study.slug, participant.resume_token])
        return format_html("<code>{}</code> (send it only to this participant)", settings.SITE_URL.rstrip("/") + path)

    def _report(self, request: HttpRequest, outcome: participants.BulkChange, done: str, rule: str) -> None:
        self.message_user(request, f"{outcome.changed} {done}.", messages.SUCCESS)
        if outcome.skipped:
            self.message_user(request, f"{outcome.skipped} skipped: {rule}", messages.WARNING)

    @admin.action(description="Mark approved (completed participants)", permissions=["review"])
    def mark_approved(self, request: HttpRequest, queryset) -> None:
        outcome = participants.review_participants(participants=queryset, verdict=Participant.Review.APPROVED)
        self._report(request, outcome, "approved", "only participants who completed can be approved.")

    @admin.action(description="Mark rejected, with a reason (completed, screened out or failed attention)",
                  permissions=["review"])
    def mark_rejected(self, request: HttpRequest, queryset) -> TemplateResponse | None:
        """Prolific asks for a reason with every rejection: the action asks for it first."""
        form = RejectionForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._action_form(request, queryset, "mark_rejected", form, title="Reject with a reason",
                                     submit="Reject")  # fmt: skip
        outcome = participants.review_participants(participants=queryset, verdict=Participant.Review.REJECTED,
                                                   reason=form.cleaned_data["reason"])  # fmt: skip
        self._report(request, outcome, "rejected",
                     "only participants who completed, were screened out or failed attention checks can be rejected.")
        return None

    @admin.action(description="Mark returned on Prolific (frees their seats and open tasks)", permissions=["review"])
    def mark_returned(self, request: HttpRequest, queryset) -> None:
        outcome = participants.return_participants(participants=queryset)
        self._report(request, outcome, "marked returned; their seats and open tasks are free again",
                     "participants who completed (review them instead), already returned, or busy saving a pick.")

    @admin.action(description="Export the approve/reject list (CSV with PROLIFIC_PIDs)", permissions=["view"])
    def export_review_list(self, request: HttpRequest, queryset) -> HttpResponse:
        response = HttpResponse(participants.review_csv(queryset), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="participants-review.csv"'
        response["X-Content-Type-Options"] = "nosniff"
        return response

    @admin.action(description="Export a bonus CSV for partial completers (Prolific's bulk bonus)", permissions=["view"])
    def export_bonus_list(self, request: HttpRequest, queryset) -> HttpResponse:
        """`<PROLIFIC_PID>,<amount>` lines at the rate per task the researcher gives on the next page."""
        form = BonusForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._action_form(
                request, queryset, "export_bonus_list", form, title="Bonus for partial completers", submit="Download",
                explanation="Each selected participant who did at least one task and fewer than the study's share "
                "(and was not rejected) gets the rate times their tasks done, in your Prolific study's currency. "
                "Paste the file into Prolific's bulk bonus.",
            )
        text, _ = participants.bonus_csv(queryset, per_task=form.cleaned_data["per_task"])
        response = HttpResponse(text, content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="participants-bonus.csv"'
        response["X-Content-Type-Options"] = "nosniff"
        return response

    def _action_form(self, request: HttpRequest, queryset, action: str, form: forms.Form, **context) -> TemplateResponse:
        selected = list(queryset.values_list("pk", flat=True))
        return TemplateResponse(request, "admin/studies/participant/action_form.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "form": form, "action": action,
            "selected": selected, "count": len(selected), **context,
        })  # fmt: skip


class RejectionForm(forms.Form):
    reason = forms.CharField(
        max_length=500, strip=True, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Shown to the participants on Prolific and exported with the review list; be specific "
        "(for example: failed 2 of 3 attention checks).",
    )  # fmt: skip


class BonusForm(forms.Form):
    per_task = forms.DecimalField(
        label="Bonus per task done", min_value=Decimal("0.0001"), max_value=Decimal("100"), decimal_places=4,
        help_text="In your Prolific study's currency, for example 0.15; each amount is rounded to the cent.",
    )  # fmt: skip


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "participant", "item", "status", "assigned_at", "completed_at"]
    list_filter = ["status", "item__study"]
    list_select_related = ["participant", "item"]


@admin.register(Judgment)
class JudgmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "assignment", "chosen_slot", "cant_decide", "credit", "attention_passed", "latency_ms"]
    list_filter = ["assignment__item__study", "cant_decide", "attention_passed"]
    list_select_related = ["assignment__participant", "assignment__item"]


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "study", "status", "progress_bar", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "kind", "study"]
    list_select_related = ["study"]

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, job: Job) -> str:
        return format_html(
            '<progress value="{}" max="100">{}%</progress> {}',
            round(job.progress * 100),
            round(job.progress * 100),
            job.progress_message,
        )


@admin.register(AllocationRun)
class AllocationRunAdmin(ReadOnlyAdmin):
    """What each run of the adaptive allocation saw and decided (issue #22), and its replay: the
    run recomputed from the judgments of its time (`studies.allocation.replay`)."""

    list_display = ["id", "study", "created_at", "rule_version", "judgments_seen", "items_updated", "states"]
    list_filter = ["study"]
    list_select_related = ["study"]
    fields = ("study", "created_at", "as_of", "rule_version", "judgments_seen", "last_judgment_id", "judgments_digest",
              "left_out_participants", "parameters", "cell_table", "items_updated", "replay_check")  # fmt: skip
    readonly_fields = fields

    @admin.display(description="cells")
    def states(self, run: AllocationRun) -> str:
        counts: dict[str, int] = {}
        for cell in run.cells:
            counts[cell["state"]] = counts.get(cell["state"], 0) + 1
        return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "–"

    @admin.display(description="cells: interval, state, priority")
    def cell_table(self, run: AllocationRun) -> str:
        rows = format_html_join("", "<tr><td>{} k={} vs {} (m={})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (c["policy"], c["k"], c["opponent"], c["m"], c["n_prompts"],
             "–" if c["low"] is None else f"{c['estimate']:.3f} [{c['low']:.3f}, {c['high']:.3f}]",
             c["state"], c["priority"]) for c in run.cells
        ))  # fmt: skip
        return format_html(
            "<table><tr><th>cell</th><th>prompts</th><th>anytime-valid interval</th><th>state</th><th>priority</th>"
            "</tr>{}</table>", rows,
        )

    @admin.display(description="replay")
    def replay_check(self, run: AllocationRun) -> str:
        result = allocation.replay(run)
        if result.matches:
            return "Matches: the judgments of its time give the same intervals, states and priorities."
        notes = [] if result.same_judgments else ["the judgments of its time are no longer the ones it saw"]
        notes += [] if result.same_rule else [f"recorded under rule {run.rule_version}, now {allocation.rule.RULE_VERSION}"]
        return format_html("Does not match: {}", format_html_join("; ", "{}", ((n,) for n in notes + list(result.differences))))


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    """Single-use invite links (`Study.Recruitment.INVITES`): one place each, listed with their
    state and who used them, revoked by the action (`flow.revoke_invites`)."""

    list_display = ["__str__", "study", "state", "used_by", "used_at", "revoked_at", "invite_link"]
    list_filter = ["study", ("used_at", admin.EmptyFieldListFilter), ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["label", "study__title"]
    fields = ["study", "label", "invite_link", "used_by", "used_at", "revoked_at"]
    readonly_fields = ["invite_link", "used_by", "used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Invite | None = None) -> list[str]:
        return [*self.readonly_fields, "study"] if obj is not None else list(self.readonly_fields)

    @admin.display(description="link")
    def invite_link(self, invite: Invite) -> str:
        if not invite.pk:
            return "Save the invite and its link appears here."
        return format_html("<code>{}</code>", settings.SITE_URL.rstrip("/") + invite.link())

    @admin.action(description="Revoke the selected invites (their unused links stop working)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset) -> None:
        revoked = flow.revoke_invites(invites=queryset)
        self.message_user(request, f"Revoked {revoked} unused invite(s); used ones are kept as they are.")
