"""The work around the data path: the Prepare chain's jobs, results snapshots, and the LLMdoctor's
preference pairs, token-reward cache and trained doctors."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from studies.models.study import Policy, Prompt, Study


class ResultsSnapshot(models.Model):
    """The last computed results of a study for one origin, kept until newer judgments arrive.

    `studies/estimate/results_cache.py` serves the results page and its poll from here; the task
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


class AllocationRun(models.Model):
    """One run of the adaptive allocation (issue #22, `studies.allocation`): what it saw, what it
    decided, and under which rule, so an auditor can replay it (`studies.allocation.replay`).

    It saw the study's judgments created up to `as_of` (a few seconds before the run, so every pick
    created by then had committed), less those of `left_out_participants` (rejected in review or
    ended, as the results leave them out), `judgments_seen` of them, the highest id
    `last_judgment_id`, their sorted ids hashed into `judgments_digest`. `parameters`: the rule's
    inputs (confidence, half-width, planned prompts, ρ's sd, the "can't decide" rule, the cells'
    questions); `cells`: per cell its anytime-valid interval, state and the priority written.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="allocation_runs")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    as_of = models.DateTimeField(editable=False)
    rule_version = models.CharField(max_length=32, editable=False)
    judgments_seen = models.PositiveIntegerField(default=0, editable=False)
    last_judgment_id = models.BigIntegerField(null=True, blank=True, editable=False)
    judgments_digest = models.CharField(max_length=64, editable=False)
    left_out_participants = models.JSONField(default=list, blank=True, editable=False)
    parameters = models.JSONField(default=dict, blank=True, editable=False)
    cells = models.JSONField(default=list, blank=True, editable=False)
    items_updated = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["study", "-created_at"], name="allocation_run_study")]

    def __str__(self) -> str:
        return f"allocation of {self.study_id} at {self.created_at:%Y-%m-%d %H:%M:%S} ({self.rule_version})"
