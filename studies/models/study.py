"""The study and the first half of its data path: prompt → pool → population → fit → item.

The database enforces what must never be wrong (one candidate per (prompt, generator, index),
one judgment per assignment, counts and rates in range); model methods hold the rules about
one row; cross-model workflows live in `studies/services.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models
from django.db.models import Q
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


#: Bounds of `Study.screened_opponents` for the annotators' adversary.
MIN_SCREENED, MAX_SCREENED = 2, 12


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


def _validate_allocation_half_width(value: float) -> None:
    if not 0 < value <= 0.5:
        raise ValidationError("The allocation's half-width must be above 0 and at most 0.5, such as 0.05.")


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

    class Recruitment(models.TextChoices):
        """How a place is claimed (docs/security.md, "Recruitment modes")."""

        SHARED_LINK = "shared_link", "Shared link: anyone with the study's key joins"
        PROLIFIC = "prolific", "Prolific: the study's key and a well-formed PROLIFIC_PID"
        INVITES = "invites", "Single-use invite links: one place each"

    class Adversary(models.TextChoices):
        """Who decides the opponent the headline f̂(k) is measured against (docs/theory.md §12)."""

        MODEL = "model", "The model's adversary: the opponent the population model predicts wins most"
        ANNOTATORS = "annotators", "The annotators' adversary: the people pick the worst of several screened opponents"

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
    allow_cant_decide = models.BooleanField(
        "allow “I can't decide”", default=False,
        help_text="Show an “I can't decide” button beside the picks (attention checks too); how it counts is set below.",
    )  # fmt: skip
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
    recruitment = models.CharField(
        max_length=16, choices=Recruitment.choices, default=Recruitment.SHARED_LINK,
        help_text="Prolific: joins need a PROLIFIC_PID (24 hex characters). Single-use invites: each invite link "
        "(Invites in the admin) takes one place and the shared key no longer joins.",
    )
    per_participant_codes = models.BooleanField(
        default=False, help_text="Give each participant their own completion code (derived from a secret; the "
        "approve/reject export lists the code each participant should have submitted) instead of the study's code.",
    )
    # The key of the per-participant completion codes (`completion_code_for`); never shown.
    code_secret = models.CharField(max_length=64, default=new_token, editable=False)
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
        "fitted policy fares against responses it never saw. Pools of fewer than 8 distinct texts hold none out.",
    )
    # Adaptive allocation (issue #22, `studies.allocation`): a periodic job hands the cells still
    # undecided out first. Off by default, and for every study made before it existed.
    adaptive_allocation = models.BooleanField(
        default=False,
        help_text="While live, hand out first the items of the cells whose anytime-valid interval is still wider "
        "than the half-width below (and, against several opponents, of those still in contention for the worst); "
        "every decision is recorded (Allocation runs in the admin).",
    )
    allocation_half_width = models.FloatField(
        default=0.05, validators=[_validate_allocation_half_width],
        help_text="A cell whose anytime-valid interval is this narrow (± on the win rate) needs no more judgments first.",
    )  # fmt: skip

    adversary = models.CharField(
        "headline adversary", max_length=16, choices=Adversary.choices, default=Adversary.MODEL,
        help_text="Annotators: each policy's k samples are shown against several candidate opponents per prompt "
        "(the model's strongest, plus the worst under perturbed populations); half of each opponent's items "
        "screen for the one people find worst, the other half confirm it, and the headline f̂(k) is that "
        "confirmed win rate (the model's adversary stays beside it). Costs about as many items as the screened "
        "opponents; needs replicates ≥ 2 and a pool of at least 2 texts.",
    )  # fmt: skip
    screened_opponents = models.PositiveSmallIntegerField(
        default=4, help_text="With the annotators' adversary: candidate opponents screened per prompt (2 to 12), "
        "the model's adversary among them.",
    )  # fmt: skip

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
                condition=Q(allocation_half_width__gt=0) & Q(allocation_half_width__lte=0.5),
                name="study_allocation_half_width_range",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "preparing", "ready", "live", "paused", "closed"]),
                name="study_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(recruitment__in=["shared_link", "prolific", "invites"]), name="study_recruitment_valid"
            ),
            models.CheckConstraint(condition=Q(adversary__in=["model", "annotators"]), name="study_adversary_valid"),
        ]

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        if self.comprehension_question and self.comprehension_answer not in (self.comprehension_choices or []):
            raise ValidationError({"comprehension_answer": "The answer must be one of the choices."})
        problems = self.screening_problems()
        if problems:  # not keyed to a field: the admin shows them read-only once the design is fixed
            raise ValidationError(problems)

    def screening_problems(self) -> list[str]:
        """Why the annotators' adversary can't be run with this design ([] when it can, or when the
        study uses the model's adversary). The screen needs two shares of items per opponent
        (replicates ≥ 2) and at least two opponents to choose between."""
        if self.adversary != self.Adversary.ANNOTATORS:
            return []
        problems = []
        if not MIN_SCREENED <= (self.screened_opponents or 0) <= MAX_SCREENED:
            problems.append(f"Screened opponents must be from {MIN_SCREENED} to {MAX_SCREENED} for the annotators' "
                            "adversary.")
        if (self.replicates or 0) < 2:
            problems.append("The annotators' adversary splits each screened opponent's items into a screening and a "
                            "confirmation share: set replicates to at least 2 (4 or more gives each share 2 items).")
        if (self.pool_size or 0) < 2:
            problems.append("The annotators' adversary needs at least 2 candidate texts per prompt to screen "
                            "opponents: set the pool size to at least 2.")
        return problems

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

    def completion_code_for(self, participant: models.Model) -> str:
        """The code a participant who completes gets: the study's, or with `per_participant_codes`
        their own, an HMAC of their pseudonym under `code_secret` (12 hex characters). Derived, so
        the review export can say which code each participant should have submitted, and one
        participant's code is worth nothing to anyone else."""
        if not self.per_participant_codes:
            return self.completion_code
        message = f"{self.pk}:{participant.pseudonym}".encode()  # type: ignore[attr-defined]
        return hmac.new(self.code_secret.encode(), message, hashlib.sha256).hexdigest()[:12].upper()

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
    # its version mark: filled by the items step, or on first display (studies/judgment/assign.py `shown_in_order`).
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
    is asked to judge it; the results count it at that credit (studies/estimate/results.py).
    """

    ADVERSARY = "adversary"
    #: Labels of the other opponents a study with the annotators' adversary screens ("screen 2", …;
    #: the model's adversary, screened first, keeps ADVERSARY): `studies/steps/screening.py`.
    SCREEN_PREFIX = "screen "

    class Share(models.TextChoices):
        """Which share of the annotators' adversary an item belongs to (docs/theory.md §12)."""

        NONE = "", "Not screened"
        SCREENING = "screening", "Screening: finds the opponent people find worst"
        CONFIRMATION = "confirmation", "Confirmation: measures the win rate against it"

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
    share = models.CharField(
        max_length=12, choices=Share.choices, default=Share.NONE, blank=True,
        help_text="With the annotators' adversary: the screening or confirmation share of a screened opponent's items.",
    )  # fmt: skip
    # Counters kept by studies/judgment/rules.py in the transaction that assigns or releases (issue #14):
    # live (assigned or completed) assignments, and how many of them show each rotation of the slot
    # order, keyed by the ItemCandidate id shown first. `spread` shuffles the order items are handed out.
    live_assignments = models.PositiveIntegerField(default=0, editable=False)
    rotation_use = models.JSONField(default=dict, blank=True, editable=False)
    spread = models.PositiveIntegerField(default=new_spread, editable=False)
    # Handed out first: the adaptive allocation (issue #22, `studies.allocation`) raises the items of
    # the cells still undecided and lowers those already answered; 0 for every item otherwise.
    priority = models.SmallIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The next item to hand out, in O(log n): open items of a study by kind, highest priority
            # first, then fewest live assignments, then in a shuffled order (`rules.OPEN_ORDER`).
            models.Index(
                fields=["study", "is_attention_check", "-priority", "live_assignments", "spread"],
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
