"""Small explicit builders for test data (house style E): rows, the files a researcher uploads,
and the admin's study form and plan URL as the tests drive them."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from datetime import timedelta

from django.db import connection
from django.urls import reverse
from django.utils import timezone

from studies.models import (
    Assignment,
    Candidate,
    ComparisonItem,
    GeneratorModel,
    ItemCandidate,
    Participant,
    Policy,
    Prompt,
    Study,
)

_seq = itertools.count(1)


def make_study(**overrides) -> Study:
    n = next(_seq)
    fields = {
        "slug": f"study-{n}",
        "title": f"Study {n}",
        "consent_text": "I agree to take part.",
        "instructions": "Pick the response you prefer.",
        "k_values": [1, 2],
    }
    fields.update(overrides)
    return Study.objects.create(**fields)


def make_generator(**overrides) -> GeneratorModel:
    n = next(_seq)
    fields = {"name": f"gen-{n}", "model_ref": "smollm2-135m-instruct", "decoding": {"temperature": 1.0}}
    fields.update(overrides)
    return GeneratorModel.objects.create(**fields)


def make_prompt(*, study: Study, **overrides) -> Prompt:
    fields = {"text": f"Prompt {next(_seq)}: write a haiku about tea."}
    fields.update(overrides)
    return Prompt.objects.create(study=study, **fields)


def make_policy(*, study: Study, **overrides) -> Policy:
    fields = {"name": f"policy-{next(_seq)}", "kind": Policy.Kind.SAMPLE}
    fields.update(overrides)
    return Policy.objects.create(study=study, **fields)


def make_candidate(*, prompt: Prompt, generator: GeneratorModel | None, sample_index: int, **overrides) -> Candidate:
    fields = {"text": f"Response {sample_index} to {prompt.pk}", "multiplicity": 1, "token_count": 5}
    fields.update(overrides)
    return Candidate.objects.create(prompt=prompt, generator=generator, sample_index=sample_index, **fields)


def make_item(*, study: Study, prompt: Prompt, policy: Policy, texts: list[str], counts: list[tuple[int, int]],
              k: int = 2, opponent_label: str = ComparisonItem.ADVERSARY, m: int = 1, **overrides) -> ComparisonItem:
    """An item showing `texts` in slots 0.. with provenance counts (c_A, c_B) per text."""
    item = ComparisonItem.objects.create(
        study=study, prompt=prompt, policy=policy, k=k, opponent_label=opponent_label, m=m, **overrides
    )
    generator = GeneratorModel.objects.first() or make_generator()
    for slot, (text, (c_a, c_b)) in enumerate(zip(texts, counts, strict=True)):
        candidate, _ = Candidate.objects.get_or_create(
            prompt=prompt, generator=generator, text_sha256=Candidate.hash_text(text),
            defaults={"text": text, "sample_index": Candidate.objects.filter(prompt=prompt).count()},
        )
        ItemCandidate.objects.create(item=item, candidate=candidate, slot=slot, count_policy=c_a, count_opponent=c_b)
    return item


def make_participant(*, study: Study, **overrides) -> Participant:
    return Participant.objects.create(study=study, **overrides)


def make_attention_item(*, study: Study, prompt: Prompt, texts: list[str], broken: int, replicate: int = 0,
                        **overrides) -> ComparisonItem:
    """An attention check showing `texts` in slots 0..; `texts[broken]` is the deliberately broken one."""
    item = ComparisonItem.objects.create(
        study=study, prompt=prompt, policy=None, k=1, m=len(texts) - 1, opponent_label="attention",
        is_attention_check=True, replicate=replicate, **overrides,
    )
    for slot, text in enumerate(texts):
        candidate, _ = Candidate.objects.get_or_create(
            prompt=prompt, generator=None, text_sha256=Candidate.hash_text(text),
            defaults={"text": text, "is_attention_check": slot == broken,
                      "sample_index": 10_000 + Candidate.objects.filter(prompt=prompt, generator=None).count()},
        )
        ItemCandidate.objects.create(item=item, candidate=candidate, slot=slot, count_policy=0, count_opponent=1)
    return item


def make_live_study(n_items: int = 3, *, prompt_text: str = "Prompt number", **overrides) -> Study:
    """A live study ready for annotators: `n_items` two-text items, each on its own prompt
    ("<prompt_text> <i>"); two annotations per item, two items per participant, no attention checks."""
    fields = {"status": Study.Status.LIVE, "annotations_per_item": 2, "items_per_participant": 2, "attention_check_rate": 0}
    fields.update(overrides)
    study = make_study(**fields)
    policy = make_policy(study=study)
    for i in range(n_items):
        make_item(study=study, prompt=make_prompt(study=study, text=f"{prompt_text} {i}"), policy=policy,
                  texts=[f"Answer {i}a", f"Answer {i}b"], counts=[(2, 0), (0, 1)])
    return study


def abandoned_participant(study: Study) -> tuple[Participant, Assignment]:
    """A participant who took a task two hours ago and was never seen again."""
    then = timezone.now() - timedelta(hours=2)
    participant = make_participant(study=study, status=Participant.Status.ACTIVE, consent_at=then, last_active_at=then)
    assignment = Assignment.objects.create(participant=participant, item=study.items.first(), assigned_at=then)
    return participant, assignment


def anonymous_rows(n: int) -> bytes:
    """Prompts without external_id: nothing but the job's own state keeps them from being imported twice."""
    return "".join(json.dumps({"text": f"Prompt number {i}: say something kind."}) + "\n" for i in range(n)).encode()


def admin_study_form(rf, researcher, study, **changes):
    """The admin's real form for the study, bound to its current values with `changes`."""
    from django.contrib import admin
    from django.forms.models import model_to_dict

    request = rf.post("/")
    request.user = researcher
    form_class = admin.site.get_model_admin(Study).get_form(request, obj=study, change=True)
    data = {k: v for k, v in model_to_dict(study).items() if v is not None}
    for name in ("k_values", "comprehension_choices"):
        data[name] = json.dumps(data[name])
    data.pop("generator", None)
    data.update(changes)
    return form_class(data=data, instance=study)


def plan_url(study, **params) -> str:
    """The admin's "Plan" page for the study, with `params` as its query."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return reverse("admin:studies_study_plan", args=[study.pk]) + (f"?{query}" if query else "")


def in_threads(n: int, target: Callable[[int], object]) -> list:
    """Run target(i) in n threads that start together, each on its own database connection
    (closed at the end); returns each thread's result, or the exception it raised."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # returned, for the test to inspect
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results
