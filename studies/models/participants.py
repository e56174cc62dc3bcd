"""The participant's side of the data model: participants, their assignments and judgments.

The participant's path that writes them lives in `studies/judgment/`.
"""

from __future__ import annotations

import secrets

from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from studies.models.study import ComparisonItem, ItemCandidate, Study, new_token


class ParticipantQuerySet(models.QuerySet):
    """The participant groups the participant's path counts (studies/judgment/)."""

    def in_progress(self) -> ParticipantQuerySet:
        """Consented and not finished (`Participant.IN_PROGRESS`)."""
        return self.filter(status__in=Participant.IN_PROGRESS)

    def seated(self) -> ParticipantQuerySet:
        """Holding a seat against `Study.max_participants`: consented, and not timed out or returned
        (`Participant.SEAT_FREED`); finishing keeps it (their work fills the place)."""
        return self.filter(consent_at__isnull=False).exclude(status__in=Participant.SEAT_FREED)

    def worked(self) -> ParticipantQuerySet:
        """With at least one completed task (`judgment.rules.has_worked`)."""
        return self.filter(tasks_done__gt=0)


class Participant(models.Model):
    class Status(models.TextChoices):
        JOINED = "joined", "Joined"
        CONSENTED = "consented", "Consented"
        ACTIVE = "active", "Annotating"
        COMPLETED = "completed", "Completed"
        ENDED = "ended", "Ended (failed attention checks)"
        DECLINED = "declined", "Declined consent"
        SCREENED_OUT = "screened_out", "Ended (failed the comprehension check twice)"
        TIMED_OUT = "timed_out", "Timed out (inactive; seat freed)"
        RETURNED = "returned", "Returned (on Prolific; seat freed)"

    class Review(models.TextChoices):
        """The researcher's verdict on a participant's submission, as on Prolific."""

        PENDING = "pending", "Not reviewed"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    # Status groups (the participant's path, studies/judgment/):
    # consented and not finished: they hold a seat and may hold an assignment;
    IN_PROGRESS = (Status.CONSENTED, Status.ACTIVE)
    # what gives a consented participant's seat back (the sweep, or the researcher: returned);
    SEAT_FREED = (Status.TIMED_OUT, Status.RETURNED)
    # what the researcher may review, per verdict: sessions that reached an end in ualign.
    REVIEWABLE: dict[str, tuple[str, ...]] = {
        Review.APPROVED: (Status.COMPLETED,),
        Review.REJECTED: (Status.COMPLETED, Status.ENDED, Status.SCREENED_OUT),
    }

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="participants")
    external_id = models.CharField(max_length=200, blank=True, help_text="Prolific PID or invite label.")
    prolific_study_id = models.CharField(max_length=200, blank=True)
    prolific_session_id = models.CharField(max_length=200, blank=True)
    # The browser that joined holds access_token in a signed, HttpOnly cookie (studies/views.py);
    # resume_token is the secret of the participant's resume link, to continue on another device.
    access_token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    resume_token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    # A keyed hash of the joining client's IP address, for the per-study join rate limit; never the address.
    client_key = models.CharField(max_length=64, blank=True, editable=False)
    pseudonym = models.CharField(max_length=32, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.JOINED)
    consent_at = models.DateTimeField(null=True, blank=True)
    comprehension_attempts = models.PositiveSmallIntegerField(default=0)
    comprehension_passed = models.BooleanField(default=False)
    attention_failures = models.PositiveSmallIntegerField(default=0)
    completion_code = models.CharField(max_length=64, blank=True)
    is_simulated = models.BooleanField(default=False)
    review_status = models.CharField(max_length=16, choices=Review.choices, default=Review.PENDING)
    # Why the researcher rejected the submission: Prolific asks for one with every rejection (#25).
    review_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Moved on by every step and pick; the periodic sweep times out who stays idle past the study's timeout.
    last_active_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The participant's completed tasks, and the attention checks among them: moved on by the pick
    # that completes each (`judgment.picking.record_judgment`, under this row's lock, in the pick's transaction),
    # so that the annotator's path reads them instead of counting assignments (#14).
    tasks_done = models.PositiveIntegerField(default=0, editable=False)
    attention_checks_done = models.PositiveIntegerField(default=0, editable=False)

    objects = ParticipantQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id"], condition=~Q(external_id=""), name="participant_external_unique"
            ),
            models.CheckConstraint(
                condition=Q(review_status__in=["pending", "approved", "rejected"]), name="participant_review_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["study", "client_key", "created_at"], name="participant_join_rate"),
            models.Index(fields=["study", "status", "last_active_at"], name="participant_activity"),
            # Seats taken (consented participants whose status keeps a seat), counted up to
            # Study.max_participants from the index alone (the status is in it: #12's SEAT_FREED).
            models.Index(fields=["study", "status"], condition=Q(consent_at__isnull=False), name="participant_seated"),
        ]

    def __str__(self) -> str:
        return self.pseudonym

    def save(self, *args, **kwargs) -> None:
        if not self.pseudonym:
            self.pseudonym = new_pseudonym()
        super().save(*args, **kwargs)


def new_pseudonym() -> str:
    """A participant's pseudonym (what exports and the admin show instead of their Prolific ID)."""
    return "p-" + secrets.token_hex(6)


class StudySeats(models.Model):
    """The seats a study's participants hold now (`Participant.objects.seated()`), as one counter.

    Consent takes a seat with one conditional upsert (`judgment.seats.claim`: `taken < cap`), the
    last statement of its transaction, so concurrent consents wait on this row only for the commit
    that follows it, not on the study's row for the whole consent; the moves that free seats
    (`judgment.participants`) take them off in their own transaction. Its own table, so that a
    researcher saving the study (every column) never writes over it. A study without a row holds
    no seats yet (the upsert creates it); migration 0015 counted the seats of earlier studies.
    """

    study = models.OneToOneField(Study, on_delete=models.CASCADE, primary_key=True, related_name="seats")
    taken = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.study_id}: {self.taken} seats"


class Assignment(models.Model):
    class Status(models.TextChoices):
        ASSIGNED = "assigned", "Assigned"
        COMPLETED = "completed", "Completed"
        RELEASED = "released", "Released (timed out)"

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="assignments")
    item = models.ForeignKey(ComparisonItem, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ASSIGNED)
    display_order = models.JSONField(default=list, help_text="ItemCandidate ids in the order this person sees them.")
    assigned_at = models.DateTimeField(default=timezone.now)
    rendered_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # No participant sees the same item twice.
            models.UniqueConstraint(fields=["participant", "item"], name="assignment_once_per_participant"),
        ]
        indexes = [
            # A participant's open assignment, and the expired ones to release, without a scan.
            models.Index(fields=["participant"], condition=Q(status="assigned"), name="assignment_open"),
            models.Index(fields=["assigned_at"], condition=Q(status="assigned"), name="assignment_open_since"),
        ]

    def __str__(self) -> str:
        return f"{self.participant} → item {self.item_id}"


class Judgment(models.Model):
    """One pick. `credit` is the policy's share of the chosen text (theory.md §1)."""

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgment")
    chosen_slot = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Position shown, from 1.")
    chosen = models.ForeignKey(ItemCandidate, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    cant_decide = models.BooleanField(default=False)
    credit = models.FloatField(null=True, blank=True)
    attention_passed = models.BooleanField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="From render to pick, on the server.")
    rendered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(cant_decide=True) & Q(chosen__isnull=True))
                | (Q(cant_decide=False) & Q(chosen__isnull=False)),
                name="judgment_choice_or_cant_decide",
            ),
            models.CheckConstraint(
                condition=Q(credit__isnull=True) | (Q(credit__gte=0) & Q(credit__lte=1)), name="judgment_credit_unit"
            ),
        ]

    def __str__(self) -> str:
        return f"judgment on {self.assignment}"


class Invite(models.Model):
    """A single-use invite link for a study recruited by invites (`Study.Recruitment.INVITES`):
    `/s/<slug>/?invite=<token>` takes one place. The join that uses it records the participant
    (`judgment.flow.join_study`, under the invite's row lock); a used or revoked invite joins
    nobody else. Revoking stops an unused link; a participant who joined already keeps going."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="invites")
    token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    label = models.CharField(max_length=200, blank=True, help_text="Whom it is for (researchers only see it).")
    used_by = models.OneToOneField(Participant, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="invite", editable=False)  # fmt: skip
    used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.label or f"invite {self.pk}"

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "used" if self.used_at is not None else "unused"

    def link(self) -> str:
        return f"{reverse('studies:join', args=[self.study.slug])}?invite={self.token}"
