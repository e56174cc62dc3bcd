"""The demo study that the README's main command (`make run` = `manage.py serve --demo`) sets up.

Idempotent: `ensure_demo_study` creates the study once (slug "demo") and afterwards returns it
as it is, so restarting the command resumes where it was: a draft is prepared, a study still
preparing has its current step re-enqueued (harmless, see services.prepare_study), a ready
demo is made live. Only the demo goes live by itself; a real study goes live when a researcher
says so.

The demo is designed to show a finding, not only the machinery (README, "The demo's design"; the
plan that chose it is in docs/planning.md, from bench/demo_design.py): 12 one-sentence prompts, a
pool of 8 samples of at most 80 tokens from the shipped SmolLM2-135M-Instruct, a population with
a bare majority (0.52) whose taste SmolLM2 judges and two minorities (0.24 each) read by
embedding similarity, the policies sample, NLHF and multiplayer at k ∈ {1, 2, 4, 8}, 4 items per
(prompt, policy, k, opponent) and 2 annotations per item. Prepared in about 1.5 CPU-minutes; the
simulated annotators that fill it make about 2,800 judgments, after which the results page
tells multiplayer (≈ 8/9 at k = 8) from NLHF (≈ 0.56, collapsed onto the majority's favourite).
Its pre-registered question (`DEMO_QUESTION`): does NLHF reach f̂(8) ≥ 8/9, the equilibrium's guarantee?
`UALIGN_DEMO_MODEL` swaps the model (a local folder), which the tests use for a tiny one.

`UALIGN_DEMO_DOCTOR=1` (read when the demo study is created) adds an LLMdoctor policy: Prepare
then also trains a small doctor per minority persona, each on its own type's pairs (TFPO,
`DEMO_DOCTOR_PARAMS`), and samples guided candidates mixing both, which makes the first
`make run` several minutes longer (README).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from studies import services
from studies.job_rows import step_summary
from studies.models import (
    GeneratorModel,
    Job,
    Policy,
    PreferenceSource,
    Prompt,
    Study,
    StudyQuestion,
)

DEMO_SLUG = "demo"
DEMO_MODEL = "smollm2-135m-instruct"

PROMPTS = [
    ("tea", "In one sentence: how do I brew a good cup of green tea?"),
    ("rainbow", "In one sentence: why do rainbows appear after rain?"),
    ("email", "Write a one-sentence reply that politely declines a meeting invitation."),
    ("budget", "In one sentence: how can I stick to a monthly budget?"),
    ("sleep", "In one sentence: what can I do to fall asleep faster?"),
    ("cactus", "In one sentence: how often should I water a cactus?"),
    ("running", "In one sentence: how should a beginner start running?"),
    ("stars", "In one sentence: why do stars twinkle?"),
    ("gift", "In one sentence: what is a good birthday gift for a friend who loves cooking?"),
    ("focus", "In one sentence: how can I stay focused while studying?"),
    ("sea", "In one sentence: why is the sea salty?"),
    ("autumn", "Describe a walk in an autumn forest in one sentence."),
]

# Who the demo's users are (theory.md §7, "two responses, majority α", with the minority split
# in two as in its Condorcet-winner example 0.52/0.24/0.24): a bare majority of general readers,
# whose taste SmolLM2 judges, and two minorities with a taste of their own, read from each text
# by its embedding similarity to a description of that taste. README, "The demo's design", says
# why: SmolLM2-135M asked as five different personas ranks the answers almost identically
# (correlation 0.96-0.98), so a population of persona judges alone is one taste, every policy
# collapses onto its favourite, and there is nothing to find.
MAJORITY_WEIGHT = 0.52
MAJORITY = ("general reader", "A general reader who wants a clear, correct and helpful answer.")
MINORITIES = (
    ("child", "A ten-year-old who likes simple words, friendly tone and fun examples."),
    ("poet", "A poet who enjoys vivid, warm and imaginative language."),
)
SYSTEM_PROMPT = "You are a helpful assistant. Answer in one sentence."
MAX_NEW_TOKENS = 80

POLICIES = (
    ("sample", Policy.Kind.SAMPLE),
    ("nlhf", Policy.Kind.NLHF),
    ("multiplayer", Policy.Kind.MULTIPLAYER),
)
K_VALUES = (1, 2, 4, 8)
POOL_SIZE = 8
REPLICATES = 4
ANNOTATIONS_PER_ITEM = 2

CONSENT = """This is a **demo study** running on your own machine. Nothing you do here is sent anywhere.

You will compare short responses written by a small language model (SmolLM2-135M) and pick the one
you prefer. Your choices are stored in the local database only."""

INSTRUCTIONS = """Each task shows a prompt and a few responses. Choose the one **you** would rather
receive. There are no right answers: we measure how well different ways of picking responses serve
people with different tastes."""

# The demo's pre-registered question (issue #22), stated before it goes live and copied to its pilots: does NLHF
# reach the (k+1)-player equilibrium's guarantee k/(k+1) = 8/9 at k = 8? Theory (docs/theory.md §7) says no:
# NLHF serves the majority's favourite and stays near the majority's share however large k grows. The rule
# answers from 10 prompts on; the pilot's results page shows the answer and the judgments a stop there would
# have saved (one measured fill: "no" after 336 of 2,816 judgments; docs/theory.md §11). "Is multiplayer's
# f̂(8) ≥ ½?" was the first choice, but with 12 prompts it stayed open in two of three fills. It only tells (it does not
# pause): the pilot runs to its end, so the page keeps the whole finding too. A pausing question is in the tests.
DEMO_QUESTION: dict[str, object] = {
    "kind": "threshold", "policy": "nlhf", "k": 8, "threshold": 8 / 9, "alpha": 0.05, "on_answer": "tell",
}

# One doctor per minority persona (issue #23), each trained only on its own type's pairs (a doctor
# trained on every persona's pairs learns conflicting targets), with persona-specific token
# rewards; decoding mixes them, α = 1 − Σβ, so an untrained doctor would reproduce plain sampling
# (no sharpening of the patient). A short training: enough for the chain to run end to end on two
# CPU cores in minutes, not a converged doctor (docs/llmdoctor.md has what training costs and
# what it does on held-out prompts).
DEMO_DOCTOR_BETA = 0.3


def _persona_doctor(label: str, persona: str) -> dict[str, object]:
    about = f"{SYSTEM_PROMPT} You are answering for this person: {persona}"
    return {
        "beta": DEMO_DOCTOR_BETA,
        "pairs": {"from": "population", "types": [label]},
        "rewards": {"max_response_tokens": 56, "positive_system": f"{about} Write the answer this person would love.",
                    "negative_system": f"{about} Write an answer this person would dislike."},
        "tfpo": {"steps": 20, "pairs_per_step": 2, "learning_rate": 1e-3, "checkpoint_every": 5},
    }


DEMO_DOCTOR_PARAMS: dict[str, object] = {
    "alpha": 1 - DEMO_DOCTOR_BETA * len(MINORITIES),
    "doctors": [_persona_doctor(label, persona) for label, persona in MINORITIES],
}


@dataclass(frozen=True)
class DemoLinks:
    annotator: str
    admin: str
    results: str
    jobs: str


def demo_model() -> str:
    return os.environ.get("UALIGN_DEMO_MODEL", DEMO_MODEL)


def demo_doctor() -> bool:
    """Whether the demo study gets an LLMdoctor policy (`UALIGN_DEMO_DOCTOR`, off by default)."""
    return os.environ.get("UALIGN_DEMO_DOCTOR", "").strip().lower() in ("1", "true", "yes", "on")


@transaction.atomic
def ensure_demo_study() -> Study:
    """The demo study, created with its prompts, generator, personas and policies if missing."""
    existing = Study.objects.filter(slug=DEMO_SLUG).first()
    if existing is not None:
        return existing
    model = demo_model()
    generator, _ = GeneratorModel.objects.get_or_create(
        name=f"demo: {model}"[:100],
        defaults={
            "model_ref": model,
            "decoding": {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": MAX_NEW_TOKENS,
                         "system_prompt": SYSTEM_PROMPT},
            "batch_size": POOL_SIZE,
            "seed": 1,
        },
    )
    study = Study.objects.create(
        slug=DEMO_SLUG,
        title="Demo: which responses do people prefer?",
        consent_text=CONSENT,
        instructions=INSTRUCTIONS,
        generator=generator,
        pool_size=POOL_SIZE,
        k_values=list(K_VALUES),
        opponent_outputs=1,
        annotations_per_item=ANNOTATIONS_PER_ITEM,
        items_per_participant=12,
        replicates=REPLICATES,
        attention_check_rate=0.1,
        seed=7,
        # Pools of 8 are the minimum for a held-out check; a quarter held out removes the best answer on some prompts.
        held_out_fraction=0.0,
    )
    for key, text in PROMPTS:
        Prompt.objects.create(study=study, external_id=key, text=text)
    label, persona = MAJORITY
    judge: dict[str, object] = {"personas": [persona], "labels": [label]}
    if model != DEMO_MODEL:
        judge["model"] = model
    PreferenceSource.objects.create(study=study, kind=PreferenceSource.Kind.PERSONA_JUDGE, params=judge,
                                    weight=MAJORITY_WEIGHT)
    PreferenceSource.objects.create(
        study=study, kind=PreferenceSource.Kind.EMBEDDING, weight=1 - MAJORITY_WEIGHT,
        params={"personas": [p for _, p in MINORITIES], "labels": [name for name, _ in MINORITIES]},
    )
    for name, kind in POLICIES:
        Policy.objects.create(study=study, name=name, kind=kind)
    if demo_doctor():
        Policy.objects.create(study=study, name="llmdoctor", kind=Policy.Kind.DOCTOR, params=DEMO_DOCTOR_PARAMS)
    StudyQuestion.objects.create(study=study, policy=study.policies.get(name=DEMO_QUESTION["policy"]),
                                 **{name: value for name, value in DEMO_QUESTION.items() if name != "policy"})
    return study


def advance(study: Study, *, retry_failed: bool = False) -> str:
    """Move the demo one step along; returns what happened, or "" when nothing changed.

    draft → start Prepare (after a failed chain only when `retry_failed`, so a watcher doesn't
    loop on an error); ready → live.
    """
    study.refresh_from_db()
    if study.status == Study.Status.DRAFT:
        if not retry_failed and failure(study):
            return ""
        services.prepare_study(study=study)
        return (f"Preparing the demo study: generating {study.prompts.count()} × {study.pool_size} answers, scoring "
                "them for each user type, fitting the policies, building the items (about 1.5 CPU-minutes)…")
    if study.status == Study.Status.READY:
        study.status = services.change_study_status(study=study, action="go-live").status
        return "The demo study is prepared; making it live."
    return ""


def resume(study: Study) -> str:
    """On start-up: revive a chain that was preparing when the last run stopped, or retry a failed one."""
    study.refresh_from_db()
    if study.status == Study.Status.PREPARING:
        services.prepare_study(study=study)
        return "Resuming the demo study's preparation."
    return advance(study, retry_failed=True)


def links(study: Study) -> DemoLinks:
    base = settings.SITE_URL.rstrip("/")
    return DemoLinks(
        annotator=f"{base}{study.participant_link()}",
        admin=f"{base}{reverse('admin:index')}",
        results=f"{base}{reverse('studies:results', args=[study.slug])}",
        jobs=f"{base}{reverse('admin:studies_study_jobs', args=[study.pk])}",
    )


def progress_lines(study: Study) -> list[str]:
    """Where the demo's preparation is, one line per step: a summary once it is done, its progress
    line while it runs. `manage.py serve --demo` prints each new line, so the terminal follows
    every step (persona judging included) instead of going quiet for minutes."""
    chain = Job.objects.filter(study=study, kind=Job.Kind.PREPARE).order_by("-created_at", "-id").first()
    if chain is None:
        return []
    lines = []
    steps = list(chain.steps.order_by("id"))
    for n, step in enumerate(steps, start=1):
        head = f"  [{n}/{len(steps)}] {step.get_kind_display()}"
        if step.status == Job.Status.DONE:
            lines.append(f"{head}: done, {step_summary(step)}")
        elif step.status == Job.Status.RUNNING and step.progress_message:
            lines.append(f"{head}: {step.progress_message} ({round(step.progress * 100)}%)")
    return lines


def failure(study: Study) -> str:
    """The error of the demo's last failed preparation, if its chain failed."""
    job = Job.objects.filter(study=study, kind=Job.Kind.PREPARE).order_by("-created_at", "-id").first()
    return job.error if job is not None and job.status == Job.Status.FAILED else ""
