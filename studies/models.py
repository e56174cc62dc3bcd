"""The study data model: prompt → pool → population → fit → item → judgment.

The database enforces what must never be wrong (one candidate per (prompt, generator, index),
one judgment per assignment, counts and rates in range); model methods hold the rules about
one row; cross-model workflows live in `studies/services.py`.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from workers.generation.loading import model_location_problem
from workers.policies.credit import pick_credit, tie_credit


def _validate_k_values(value: object) -> None:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= 16 for k in value)
    ):
        raise ValidationError("k values must be a non-empty list of integers from 1 to 16, such as [1, 2, 4].")
    if len(set(value)) != len(value):
        raise ValidationError("k values must not repeat.")


def _validate_held_out_fraction(value: float) -> None:
    if not 0 <= value < 1:
        raise ValidationError("The held-out share must be at least 0 and below 1, such as 0.25.")


# The assignment timeout's bounds (docs/security.md): a task takes at least a minute, and a study
# that waits a week for an abandoned task has a sweep with nothing to do. Unbounded, a huge value
# overflowed `now - timeout` and stopped the sweep.
MIN_ASSIGNMENT_TIMEOUT = timedelta(minutes=1)
MAX_ASSIGNMENT_TIMEOUT = timedelta(days=7)


def _validate_assignment_timeout(value: timedelta) -> None:
    if not MIN_ASSIGNMENT_TIMEOUT <= value <= MAX_ASSIGNMENT_TIMEOUT:
        raise ValidationError("The assignment timeout must be between 1 minute and 7 days, such as 0:30:00.")


def _validate_object(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Must be a JSON object.")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def new_completion_code() -> str:
    return secrets.token_hex(4).upper()


def new_spread() -> int:
    """A random sort key for an item, so that annotators meet items in a shuffled order (issue #14)."""
    return secrets.randbits(31)


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PREPARING = "preparing", "Preparing"
        READY = "ready", "Ready"
        LIVE = "live", "Live"
        PAUSED = "paused", "Paused"
        CLOSED = "closed", "Closed"

    class CantDecide(models.TextChoices):
        EXCLUDE = "exclude", "Excluded from win rates"
        TIE = "tie", "Counted as a tie over all shown positions (credit k/(k+m))"

    # Allowed moves of the status machine: draft → preparing → ready → live ⇄ paused → closed.
    # Preparing falls back to draft when a job fails; closing is final. The researcher's moves
    # (live, paused, closed) are checked by `studies.services.change_study_status`.
    TRANSITIONS = {
        Status.DRAFT: {Status.PREPARING},
        Status.PREPARING: {Status.READY, Status.DRAFT},
        Status.READY: {Status.LIVE, Status.PREPARING, Status.CLOSED},
        Status.LIVE: {Status.PAUSED, Status.CLOSED},
        Status.PAUSED: {Status.LIVE, Status.CLOSED},
        Status.CLOSED: set(),
    }

    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, help_text="Shown to annotators before the first task (Markdown).")
    consent_text = models.TextField(help_text="The consent form annotators must accept (Markdown).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)

    generator = models.ForeignKey(
        "GeneratorModel", null=True, blank=True, on_delete=models.PROTECT, related_name="studies"
    )
    pool_size = models.PositiveIntegerField(default=16, help_text="Candidates N sampled per prompt.")
    k_values = models.JSONField(default=list, validators=[_validate_k_values], help_text="For example [1, 2, 4].")
    opponent_outputs = models.PositiveSmallIntegerField(default=1, help_text="m: responses the opponent shows.")
    annotations_per_item = models.PositiveSmallIntegerField(default=3)
    items_per_participant = models.PositiveSmallIntegerField(default=20)
    replicates = models.PositiveSmallIntegerField(
        default=1, help_text="Comparison items per (prompt, policy, k, opponent)."
    )
    attention_check_rate = models.FloatField(default=0.1, help_text="Fraction of attention-check items (0–1).")
    max_attention_failures = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="End a session after this many failed checks; blank never ends it."
    )
    allow_cant_decide = models.BooleanField(default=False)
    cant_decide_analysis = models.CharField(max_length=16, choices=CantDecide.choices, default=CantDecide.EXCLUDE)
    comprehension_question = models.TextField(blank=True)
    comprehension_choices = models.JSONField(default=list, blank=True)
    comprehension_answer = models.CharField(max_length=200, blank=True)
    assignment_timeout = models.DurationField(default=timedelta(minutes=30), validators=[_validate_assignment_timeout])
    max_participants = models.PositiveIntegerField(null=True, blank=True)
    completion_code = models.CharField(max_length=64, default=new_completion_code)
    completion_redirect_url = models.URLField(
        blank=True, validators=[URLValidator(schemes=["http", "https"])],  # no ftp:// (issue #24)
        help_text="For example Prolific's completion URL (http or https).",
    )
    invite_token = models.CharField(max_length=64, unique=True, default=new_token)
    seed = models.PositiveIntegerField(default=0)
    # A pilot copy (studies/pilots.py): the original's items on copied prompts and policies, with its
    # own quota, participants and judgments, for simulated annotators only; never joinable by people.
    pilot_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="pilots", editable=False,
        help_text="Set on a throwaway pilot copy: the study it pilots.",
    )
    held_out_fraction = models.FloatField(
        default=0.25,
        validators=[_validate_held_out_fraction],
        help_text="Share of each prompt's pool kept out of fitting (0 to below 1), so the results can say how a "
        "fitted policy fares against responses it never saw. Pools of fewer than 4 distinct texts hold none out.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(opponent_outputs__gte=1), name="study_m_positive"),
            models.CheckConstraint(condition=Q(annotations_per_item__gte=1), name="study_annotations_positive"),
            models.CheckConstraint(condition=Q(items_per_participant__gte=1), name="study_items_positive"),
            models.CheckConstraint(condition=Q(pool_size__gte=1), name="study_pool_positive"),
            models.CheckConstraint(condition=Q(replicates__gte=1), name="study_replicates_positive"),
            models.CheckConstraint(
                condition=Q(assignment_timeout__gte=MIN_ASSIGNMENT_TIMEOUT, assignment_timeout__lte=MAX_ASSIGNMENT_TIMEOUT),
                name="study_timeout_bounded",
            ),
            models.CheckConstraint(
                condition=Q(attention_check_rate__gte=0) & Q(attention_check_rate__lte=1),
                name="study_attention_rate_unit",
            ),
            models.CheckConstraint(
                condition=Q(held_out_fraction__gte=0) & Q(held_out_fraction__lt=1), name="study_held_out_fraction_unit"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "preparing", "ready", "live", "paused", "closed"]),
                name="study_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        if self.comprehension_question and self.comprehension_answer not in (self.comprehension_choices or []):
            raise ValidationError({"comprehension_answer": "The answer must be one of the choices."})

    def can_move_to(self, status: str) -> bool:
        return status in self.TRANSITIONS.get(self.Status(self.status), set())

    def move_to(self, status: str) -> None:
        """Change status with a conditional UPDATE, so two racing requests can't both move it."""
        if not self.can_move_to(status):
            raise ValidationError(f"A {self.status} study cannot become {status}.")
        moved = Study.objects.filter(pk=self.pk, status=self.status).update(status=status, updated_at=timezone.now())
        if moved != 1:
            raise ValidationError("The study changed meanwhile; reload and try again.")
        self.status = status

    @property
    def is_pilot(self) -> bool:
        return self.pilot_of_id is not None

    @property
    def is_accepting_participants(self) -> bool:
        return self.status == self.Status.LIVE

    def design_fixed_reason(self) -> str:
        """Why the design can no longer change, or "" while it can (a draft without items).

        Once a study leaves draft or has comparison items, its prompts, k values, m, policies,
        preference sources and the other fields that make its items (`DESIGN_FIELDS` in the
        admin) stay as they are: changing them would change what the items and judgments mean.
        """
        if self.pk is None:
            return ""
        if self.status != self.Status.DRAFT:
            return f"“{self}” is {self.get_status_display().lower()}"
        if self.items.exists():
            return f"“{self}” already has comparison items"
        return ""

    def design_fixed_message(self) -> str:
        reason = self.design_fixed_reason()
        if not reason:
            return ""
        return (f"{reason}, so its design is fixed: changing its prompts, k values, m, policies, preference "
                "sources, generator, pool size, replicates, annotations per item or attention-check rate would "
                "change what its items and judgments mean. Copy it as a new draft study to change them.")

    def participant_link(self, *, prolific: bool = False) -> str:
        """The path (and query) annotators join by; it carries the study's secret (invite_token).

        With `prolific`, Prolific's placeholders for PROLIFIC_PID, STUDY_ID and SESSION_ID follow,
        for the study URL set on Prolific.
        """
        link = f"{reverse('studies:join', args=[self.slug])}?invite={self.invite_token}"
        if prolific:
            link += "".join(f"&{name}={{{{%{name}%}}}}" for name in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID"))
        return link


class Prompt(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField()
    external_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True, validators=[_validate_object])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "external_id"], condition=~Q(external_id=""), name="prompt_external_id_unique"
            ),
            models.CheckConstraint(condition=~Q(text=""), name="prompt_text_nonempty"),
        ]

    def __str__(self) -> str:
        return self.external_id or self.text[:60]


class GeneratorModel(models.Model):
    name = models.CharField(max_length=100, unique=True)
    model_ref = models.CharField(
        max_length=500,
        help_text="Hugging Face id, local path, or 'smollm2-135m-instruct' for the shipped demo model.",
    )
    revision = models.CharField(max_length=100, blank=True)
    gguf_file = models.CharField(max_length=200, blank=True)
    decoding = models.JSONField(
        default=dict,
        blank=True,
        validators=[_validate_object],
        help_text='For example {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 128}.',
    )
    batch_size = models.PositiveSmallIntegerField(default=8)
    seed = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(batch_size__gte=1), name="generator_batch_positive")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # The worker refuses these too (load_model); here the admin says so at once.
        problem = model_location_problem(self.model_ref, self.gguf_file or None)
        if problem:
            raise ValidationError({"gguf_file" if problem.startswith("gguf_file") else "model_ref": problem})


class PreferenceSource(models.Model):
    class Kind(models.TextChoices):
        PERSONA_JUDGE = "persona_judge", "Persona judges (a chat model asked per persona)"
        EMBEDDING = "embedding", "Embedding similarity to persona descriptions"
        REWARD_MODEL = "reward_model", "Reward model (sequence classification)"
        CSV = "csv", "Uploaded utilities (CSV)"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="preference_sources")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True, validators=[_validate_object])
    weight = models.FloatField(default=1.0, help_text="Share of the population given to this source's types.")
    data = models.TextField(blank=True, help_text="Uploaded utilities for the CSV kind.")

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(weight__gt=0), name="source_weight_positive")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ×{self.weight:g}"


class Policy(models.Model):
    class Kind(models.TextChoices):
        SAMPLE = "sample", "Plain sampling (the reference μ)"
        BEST_OF_N = "best_of_n", "Best-of-N by the population's mean quantile"
        NLHF = "nlhf", "NLHF (maximal lottery)"
        CTRL = "ctrl", "CTRL (InfAlign)"
        MULTIPLAYER = "multiplayer", "Multi-player equilibrium (U-alignment)"
        DOCTOR = "doctor", "LLMdoctor guided decoding"
        CHECKPOINT = "checkpoint", "Checkpoint (its own generator)"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="policies")
    name = models.SlugField(max_length=64)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True, validators=[_validate_object])
    generator = models.ForeignKey(
        GeneratorModel,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="policies",
        help_text="For checkpoint policies: the model that generates their own candidates. For doctor policies: "
        "the row their guided candidates are saved under, with its decoding settings and seed; it must name the "
        "study's generator model (the patient). Leave it blank and Prepare makes one.",
    )

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["study", "name"], name="policy_name_unique")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.kind == self.Kind.CHECKPOINT and self.generator_id is None:
            raise ValidationError({"generator": "A checkpoint policy needs its own generator."})

    @property
    def regularisation_note(self) -> str:
        """Why this policy's fits don't carry the equilibrium's guarantee ("" when they do or none is claimed).

        A KL-regularised fit (β > 0) is the fixed point π = softmax(log μ + g_π/β), not the
        (k+1)-player equilibrium (or the maximal lottery): it has no k/(k+1) guarantee (theory.md §3).
        """
        beta = (self.params or {}).get("beta", 0)
        if self.kind not in (self.Kind.MULTIPLAYER, self.Kind.NLHF) or not isinstance(beta, int | float) or beta <= 0:
            return ""
        what = "k/(k+1) guarantee" if self.kind == self.Kind.MULTIPLAYER else "maximal lottery's ½"
        return f"regularised (β = {beta:g}): not the {what}"


class Candidate(models.Model):
    """One distinct response text in a prompt's pool.

    Identical samples are merged: `sample_index` is the first index that produced the text,
    `multiplicity` counts how many did. Multiplicities over a prompt's pool are μ.
    Attention-check candidates are deliberately broken texts with no generator.
    """

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="candidates")
    generator = models.ForeignKey(
        GeneratorModel, null=True, blank=True, on_delete=models.PROTECT, related_name="candidates"
    )
    sample_index = models.IntegerField()
    text = models.TextField()
    text_sha256 = models.CharField(max_length=64, editable=False)
    multiplicity = models.PositiveIntegerField(default=1)
    token_count = models.PositiveIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    is_attention_check = models.BooleanField(default=False)
    # The text rendered by the safe Markdown renderer (studies/templatetags/safe_markdown.py), with
    # its version mark: filled by the items step, or on first display (studies/annotation.py).
    text_html = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["prompt_id", "sample_index"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "generator", "sample_index"], name="candidate_index_unique"),
            models.UniqueConstraint(fields=["prompt", "generator", "text_sha256"], name="candidate_text_unique"),
            # Attention-check texts have no generator, and NULLs never clash in a unique index.
            models.UniqueConstraint(
                fields=["prompt", "sample_index"], condition=Q(generator__isnull=True), name="candidate_check_index_unique"
            ),
            models.CheckConstraint(condition=Q(multiplicity__gte=1), name="candidate_multiplicity_positive"),
        ]

    def __str__(self) -> str:
        return f"#{self.sample_index}: {self.text[:60]}"

    def save(self, *args, **kwargs) -> None:
        self.text_sha256 = self.hash_text(self.text)
        super().save(*args, **kwargs)

    @staticmethod
    def hash_text(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()


class PopulationMatrix(models.Model):
    """A prompt's preference population: utilities U (T × N) over its candidates, as .npy bytes."""

    prompt = models.OneToOneField(Prompt, on_delete=models.CASCADE, related_name="population")
    candidate_ids = models.JSONField(help_text="Column order of the utilities.")
    utilities = models.BinaryField(help_text="float64 array of shape (T, N), numpy .npy format.")
    weights = models.JSONField(help_text="Type weights, summing to 1.")
    type_labels = models.JSONField(default=list)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"population of {self.prompt}"


class PolicyFit(models.Model):
    class Certificate(models.TextChoices):
        EXPLOITABILITY = "exploitability", "Exploitability"
        RESIDUAL = "residual", "Fixed-point residual"
        NONE = "none", "Closed form (no certificate needed)"

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="fits")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="fits")
    k = models.PositiveSmallIntegerField()
    candidate_ids = models.JSONField(help_text="The candidates the probabilities refer to, in order.")
    probabilities = models.JSONField()
    certificate_kind = models.CharField(max_length=16, choices=Certificate.choices)
    certificate = models.FloatField(null=True, blank=True)
    converged = models.BooleanField(default=True)
    predicted_robust_win_rate = models.FloatField(
        null=True, blank=True,
        help_text="Robust win rate against the worst m-output opponent over every candidate of the prompt (fitted "
        "and held out): the adversary that the items field.",
    )
    pool_robust_win_rate = models.FloatField(
        null=True, blank=True, help_text="The certificate: robust win rate against the worst m responses of the fitted pool."
    )
    held_out_robust_win_rate = models.FloatField(
        null=True, blank=True,
        help_text="The prediction for a fresh opponent: robust win rate against the worst m held-out responses "
        "(empty when nothing was held out).",
    )
    solver_stats = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["policy", "prompt", "k"], name="fit_unique"),
            models.CheckConstraint(condition=Q(k__gte=1), name="fit_k_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.policy} k={self.k} on {self.prompt}"


class ComparisonItem(models.Model):
    """k candidates from a policy and m from an opponent, each distinct text shown once.

    `opponent_label` names the opponent: another policy's name, or "adversary" (the single
    response predicted to beat the policy most often). Attention checks have no policy.

    `needs_judgment` is False when all k + m draws are one text: the item shows a single
    response, so its credit is fixed at k/(k+m) whatever anyone picks (theory.md §1). Nobody
    is asked to judge it; the results count it at that credit (studies/results.py).
    """

    ADVERSARY = "adversary"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="items")
    policy = models.ForeignKey(Policy, null=True, blank=True, on_delete=models.CASCADE, related_name="items")
    k = models.PositiveSmallIntegerField()
    opponent_policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.CASCADE, related_name="opposed_items"
    )
    opponent_label = models.CharField(max_length=64)
    m = models.PositiveSmallIntegerField(default=1)
    replicate = models.PositiveSmallIntegerField(default=0)
    is_attention_check = models.BooleanField(default=False)
    needs_judgment = models.BooleanField(
        default=True,
        help_text="False when every draw of both sides is the same text: its credit k/(k+m) is decided by "
        "construction, so no annotator is asked to judge it.",
    )
    predicted_win_rate = models.FloatField(
        null=True, blank=True, help_text="The population model's win rate for this policy, k and opponent."
    )
    draw = models.JSONField(default=dict, blank=True, help_text="The sampled candidate ids, for provenance.")
    # Counters kept by studies/annotation.py in the transaction that assigns or releases (issue #14):
    # live (assigned or completed) assignments, and how many of them show each rotation of the slot
    # order, keyed by the ItemCandidate id shown first. `spread` shuffles the order items are handed out.
    live_assignments = models.PositiveIntegerField(default=0, editable=False)
    rotation_use = models.JSONField(default=dict, blank=True, editable=False)
    spread = models.PositiveIntegerField(default=new_spread, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The next item to hand out, in O(log n): open items of a study by kind, fewest live
            # assignments first, then in a shuffled order (studies/annotation.py `_next_open_item`).
            models.Index(
                fields=["study", "is_attention_check", "live_assignments", "spread"],
                condition=Q(needs_judgment=True),
                name="item_open_slots",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "policy", "k", "opponent_label", "m", "replicate", "is_attention_check"],
                name="item_unique",
            ),
            # Attention checks have no policy (NULL), so item_unique can't make their rebuild idempotent.
            models.UniqueConstraint(
                fields=["prompt", "replicate"], condition=Q(is_attention_check=True), name="attention_item_unique"
            ),
            models.CheckConstraint(condition=Q(k__gte=1) & Q(m__gte=1), name="item_k_m_positive"),
            models.CheckConstraint(
                condition=Q(is_attention_check=True) | Q(policy__isnull=False), name="item_policy_required"
            ),
            models.CheckConstraint(
                condition=Q(needs_judgment=True) | Q(is_attention_check=False), name="item_attention_needs_judgment"
            ),
        ]

    def __str__(self) -> str:
        if self.is_attention_check:
            return f"attention check on {self.prompt}"
        return f"{self.policy} k={self.k} vs {self.opponent_label} (m={self.m}) on {self.prompt}"

    @property
    def decided_credit(self) -> float | None:
        """k/(k+m) for an item decided by construction (one text, all draws); None if it needs judging."""
        return None if self.needs_judgment else tie_credit(self.k, self.m)


class ItemCandidate(models.Model):
    """A distinct text shown in an item, with its canonical slot and provenance counts.

    count_policy (c_A) and count_opponent (c_B) say how many of the policy's k and the
    opponent's m draws produced this text; choosing it credits the policy c_A / (c_A + c_B).
    """

    item = models.ForeignKey(ComparisonItem, on_delete=models.CASCADE, related_name="shown")
    candidate = models.ForeignKey(Candidate, on_delete=models.PROTECT, related_name="shown_in")
    slot = models.PositiveSmallIntegerField()
    count_policy = models.PositiveSmallIntegerField(default=0)
    count_opponent = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["item_id", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["item", "slot"], name="shown_slot_unique"),
            models.UniqueConstraint(fields=["item", "candidate"], name="shown_candidate_unique"),
            models.CheckConstraint(
                condition=Q(count_policy__gt=0) | Q(count_opponent__gt=0), name="shown_has_provenance"
            ),
        ]

    def __str__(self) -> str:
        return f"slot {self.slot}: {self.candidate_id} (c_A={self.count_policy}, c_B={self.count_opponent})"

    @property
    def credit(self) -> float:
        """c_A / (c_A + c_B): the policy's credit when this text is picked."""
        return pick_credit(self.count_policy, self.count_opponent)


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
    created_at = models.DateTimeField(auto_now_add=True)
    # Moved on by every step and pick; the periodic sweep times out who stays idle past the study's timeout.
    last_active_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The participant's completed tasks, and the attention checks among them: moved on by the pick
    # that completes each (`annotation._record`, under this row's lock, in the pick's transaction),
    # so that the annotator's path reads them instead of counting assignments (#14).
    tasks_done = models.PositiveIntegerField(default=0, editable=False)
    attention_checks_done = models.PositiveIntegerField(default=0, editable=False)

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
            self.pseudonym = "p-" + secrets.token_hex(6)
        super().save(*args, **kwargs)


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

    def is_expired(self, now=None) -> bool:
        now = now or timezone.now()
        timeout = self.participant.study.assignment_timeout
        return self.status == self.Status.ASSIGNED and self.assigned_at + timeout < now


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


class ResultsSnapshot(models.Model):
    """The last computed results of a study for one origin, kept until newer judgments arrive.

    `studies/results_cache.py` serves the results page and its poll from here; the task
    `refresh_results` recomputes in the background once a study has too many judgments to do it
    inside a request (issue #14). `judgment_watermark` is the highest Judgment id (of any study)
    when the computation started: a judgment of this study with a higher id makes the snapshot
    stale, and so does a change of the study row (`study_updated_at`).
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="results_snapshots")
    origin = models.CharField(max_length=16)
    payload = models.BinaryField(null=True, blank=True, editable=False, help_text="The pickled StudyResults.")
    judgment_watermark = models.BigIntegerField(null=True, blank=True)
    study_updated_at = models.DateTimeField(null=True, blank=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    compute_seconds = models.FloatField(null=True, blank=True)
    refresh_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["study", "origin"], name="results_snapshot_unique")]

    def __str__(self) -> str:
        return f"results of {self.study_id} ({self.origin}) at {self.computed_at}"


class JobQuerySet(models.QuerySet):
    def claim(self, job_id: int) -> Job | None:
        """Move a queued job to running with a conditional UPDATE; None if another worker has it.

        A job whose worker died stays 'running'; re-delivery (acks_late + reject_on_worker_lost)
        reclaims it while attempts remain, so a crashed job finishes after a restart.
        """
        now = timezone.now()
        claimable = Q(status=Job.Status.QUEUED) | Q(
            status=Job.Status.RUNNING, attempts__lt=settings.UALIGN_JOB_MAX_ATTEMPTS, heartbeat_at__lt=now - Job.stale_after()
        )
        claimed = self.filter(claimable, pk=job_id).update(
            status=Job.Status.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1
        )
        return self.get(pk=job_id) if claimed == 1 else None

    def active(self) -> JobQuerySet:
        return self.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING])


class Job(models.Model):
    """A unit of background work; the row, not Celery, holds its state."""

    STALE = timedelta(seconds=60)  # the default; settings.UALIGN_JOB_STALE_SECONDS overrides it

    class Kind(models.TextChoices):
        PING = "ping", "Worker check"
        PREPARE = "prepare", "Prepare study"
        GENERATE = "generate", "Generate candidates"
        POPULATE = "populate", "Build populations"
        FIT = "fit", "Fit policies"
        TRAIN_DOCTORS = "train_doctors", "Train LLMdoctor doctors"
        BUILD_ITEMS = "build_items", "Build comparison items"
        SIMULATE = "simulate", "Simulated annotators"
        IMPORT_PROMPTS = "import_prompts", "Import prompts"
        IMPORT_CANDIDATES = "import_candidates", "Import candidates"
        EXPORT = "export", "Export"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="steps",
        help_text="The 'prepare' job whose chain this step belongs to.",
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    # What the job reads that doesn't fit in params (an uploaded prompt file); cleared when it finishes.
    payload = models.BinaryField(null=True, blank=True, editable=False)
    result = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=1), name="job_progress_unit"),
            # At most one import queued or running per study (issue #24): a second upload while one
            # runs (or while a crashed one waits for redelivery) would import its rows twice.
            models.UniqueConstraint(
                fields=["study"], name="job_one_active_import_per_study",
                condition=Q(kind__in=["import_prompts", "import_candidates"], status__in=["queued", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.status})"

    @staticmethod
    def stale_after() -> timedelta:
        """How long a running job may go without a heartbeat before its worker counts as dead."""
        return timedelta(seconds=getattr(settings, "UALIGN_JOB_STALE_SECONDS", Job.STALE.total_seconds()))

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def is_stale(self) -> bool:
        """Running, but its worker's heartbeat stopped: the worker died (or lost the database)."""
        return (self.status == self.Status.RUNNING and self.heartbeat_at is not None
                and self.heartbeat_at < timezone.now() - self.stale_after())

    def report_progress(self, fraction: float, message: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        Job.objects.filter(pk=self.pk).update(
            progress=fraction, progress_message=message[:300], heartbeat_at=timezone.now()
        )
        self.progress, self.progress_message = fraction, message

    def mark_done(self, result: dict | None = None) -> None:
        self.status, self.progress, self.finished_at = self.Status.DONE, 1.0, timezone.now()
        self.result = result or {}
        self.save(update_fields=["status", "progress", "finished_at", "result"])

    def mark_failed(self, error: BaseException | str) -> None:
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.status, self.error, self.finished_at = self.Status.FAILED, message[:5000], timezone.now()
        self.save(update_fields=["status", "error", "finished_at"])


# --------------------------------------------------------------------------------------------
# LLMdoctor (issue #15): preference pairs, token rewards from the patient, trained doctors.
# The rules are in studies/steps/doctor.py and workers/doctor/; docs/llmdoctor.md.


class PreferencePair(models.Model):
    """`chosen` preferred to `rejected` as an answer to a prompt: what a doctor is trained on.

    Pairs come in sets per study (`pair_set`): "population:per_type:extremes",
    "population:per_type:all" and "population:weighted" are built from the study's population on
    its pool, "judgments:real" / "judgments:all" from its judgments, and "csv" is what a
    researcher imported. The derived sets are rebuilt when doctors are trained; "csv" only by
    an import. `source` says where one pair came from ("type:<label>", "weighted", "judgment", …).
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="preference_pairs")
    pair_set = models.CharField(max_length=64)
    prompt = models.ForeignKey(
        Prompt, null=True, blank=True, on_delete=models.CASCADE, related_name="preference_pairs",
        help_text="The study's prompt with this text, when there is one (an imported pair may have none).",
    )
    prompt_text = models.TextField()
    chosen = models.TextField()
    rejected = models.TextField()
    weight = models.FloatField(default=1.0)
    source = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["study", "pair_set"], name="pair_study_set")]
        constraints = [
            models.CheckConstraint(condition=Q(weight__gt=0), name="pair_weight_positive"),
            models.CheckConstraint(condition=~Q(chosen=F("rejected")), name="pair_not_a_tie"),
        ]

    def __str__(self) -> str:
        return f"{self.chosen[:30]} ≻ {self.rejected[:30]}"


class TokenRewardCache(models.Model):
    """A candidate's token rewards under the frozen patient (`workers.doctor.rewards.TokenRewards`),
    keyed by `reward_cache_key` (text, prompt, patient, both system prompts, τ, θ, the token cut)."""

    key = models.CharField(max_length=64, unique=True)
    rewards = models.JSONField(help_text="TokenRewards.to_json(): token ids, both log-probabilities, Δ, S and |r|.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key[:16]


class Doctor(models.Model):
    """One doctor of a doctor policy (its `position` in the policy's doctors), and its training.

    `key` is `workers.doctor.tfpo.doctor_key` (pairs, patient, hyper-parameters): a doctor with
    the same key is trained once and found again, in this table and on disk under `path`.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Not trained yet"
        TRAINING = "training", "Training"
        DONE = "done", "Trained"

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="doctors")
    position = models.PositiveSmallIntegerField(default=0)
    spec = models.JSONField(default=dict, blank=True, help_text="The doctor's training params when it was trained.")
    key = models.CharField(max_length=64, blank=True)
    path = models.CharField(max_length=1000, blank=True, help_text="The trained doctor's folder.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    pairs = models.PositiveIntegerField(default=0)
    step = models.PositiveIntegerField(default=0)
    steps = models.PositiveIntegerField(default=0)
    loss = models.FloatField(null=True, blank=True)
    history = models.JSONField(default=list, blank=True, help_text="(step, loss, subtb, hinge) of every step.")
    resumed_from = models.PositiveIntegerField(
        null=True, blank=True, help_text="The checkpoint's step a crashed training resumed from."
    )
    seconds = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["policy_id", "position"]
        constraints = [models.UniqueConstraint(fields=["policy", "position"], name="doctor_position_unique")]

    def __str__(self) -> str:
        return f"doctor {self.position} of {self.policy} ({self.key[:12] or 'untrained'})"
