"""Large studies for the statement-count and page-count tests of the annotator's path (issues #14
and #26): built with bulk_create as the items step leaves them, each candidate's Markdown rendered."""

from __future__ import annotations

from django.db import connection
from django.utils import timezone

from studies.models import (
    Assignment,
    Candidate,
    ComparisonItem,
    ItemCandidate,
    Judgment,
    Participant,
    Prompt,
    Study,
)
from studies.templatetags.safe_markdown import versioned_html
from tests.factories import make_generator, make_policy, make_study

# Statements that touch no table: left out of the counts.
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
ITEMS_PER_PROMPT = 10


def bulk_study(n_items: int, *, taken_share: float = 0.0) -> Study:
    """A live study of `n_items` two-text items (one in ten prompts also has an attention check),
    with `taken_share` of the items judged once by earlier annotators."""
    study = make_study(status=Study.Status.LIVE, annotations_per_item=3, items_per_participant=20,
                       attention_check_rate=0.1)  # fmt: skip
    policy, generator = make_policy(study=study), make_generator()
    n_prompts = n_items // ITEMS_PER_PROMPT
    prompts = Prompt.objects.bulk_create(Prompt(study=study, text=f"Prompt {i} of {study.slug}") for i in range(n_prompts))
    texts = [(p, j, f"Answer *{j}* to prompt {p.pk}") for p in prompts for j in range(2)]
    candidates = Candidate.objects.bulk_create(
        (Candidate(prompt=p, generator=generator, sample_index=j, text=t, text_sha256=Candidate.hash_text(t),
                   text_html=versioned_html(t)) for p, j, t in texts), batch_size=5000,
    )  # fmt: skip
    broken = Candidate.objects.bulk_create(
        Candidate(prompt=p, generator=None, sample_index=-1, text="zz broken", is_attention_check=True,
                  text_sha256=Candidate.hash_text("zz broken"), text_html=versioned_html("zz broken"))
        for p in prompts[::10]
    )  # fmt: skip
    items = [
        ComparisonItem(study=study, prompt=p, policy=policy, k=1, m=1, opponent_label="adversary", replicate=r)
        for p in prompts for r in range(ITEMS_PER_PROMPT)
    ]  # fmt: skip
    checks = [ComparisonItem(study=study, prompt=c.prompt, policy=None, k=1, m=1, opponent_label="attention",
                             is_attention_check=True) for c in broken]  # fmt: skip
    items = ComparisonItem.objects.bulk_create(items + checks, batch_size=5000)
    pair = {p.pk: (a, b) for p, a, b in zip(prompts, candidates[::2], candidates[1::2], strict=True)}
    bad = {c.prompt_id: c for c in broken}
    shown = []
    for item in items:
        a, b = pair[item.prompt_id]
        second = bad[item.prompt_id] if item.is_attention_check else b
        shown += [ItemCandidate(item=item, candidate=a, slot=0, count_policy=1),
                  ItemCandidate(item=item, candidate=second, slot=1, count_opponent=1)]  # fmt: skip
    ItemCandidate.objects.bulk_create(shown, batch_size=5000)
    _take(study, items[: int(len(items) * taken_share)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return study


def _take(study: Study, items: list[ComparisonItem]) -> None:
    """Earlier annotators (20 tasks each) have judged each of `items` once; the counters agree."""
    if not items:
        return
    now = timezone.now()
    people = Participant.objects.bulk_create(
        Participant(study=study, status=Participant.Status.COMPLETED, consent_at=now, pseudonym=f"p-{study.pk}-{i}")
        for i in range(len(items) // 20 + 1)
    )  # fmt: skip
    shown_first = dict(ItemCandidate.objects.filter(item__in=items, slot=0).values_list("item_id", "pk"))
    assignments = Assignment.objects.bulk_create(
        (Assignment(participant=people[i // 20], item=item, status=Assignment.Status.COMPLETED,
                    display_order=[shown_first[item.pk]], assigned_at=now, completed_at=now)
         for i, item in enumerate(items)), batch_size=5000,
    )  # fmt: skip
    Judgment.objects.bulk_create((Judgment(assignment=a, chosen_slot=1, credit=1.0, chosen_id=a.display_order[0])
                                  for a in assignments), batch_size=5000)  # fmt: skip
    ComparisonItem.objects.filter(pk__in=[i.pk for i in items]).update(live_assignments=1)
