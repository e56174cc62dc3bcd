"""The items step: fits → blinded comparison items with provenance counts, and attention checks.

An item is k draws from the policy and m from an opponent (another policy, or the adversary:
the m-multiset of responses that minimises the policy's win rate under the population, over
every candidate of the prompt, held-out ones included: `studies.steps.fit.predictions`); each
distinct text is shown once, with its counts (c_A, c_B) and the population's predicted credit for
that shown set (`workers.policies.expected_credit`: theory.md §1's per-position tie rule, the
rule of the solver, the certificate and the simulated annotators). An item whose k + m draws are all one text is
decided by construction (needs_judgment False, credit k/(k+m)) and never shown to anyone.
Attention checks (good pool texts plus one off-topic text: an answer to another prompt) come at the study's rate.

`build_items` is the one study-level "draft items → count attention checks → spread them over
the prompts → save" function: the Celery task, the reproduction check and the tests call it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from django.db import connection, transaction

import workers.policies as wp
from studies.models import (
    Candidate,
    ComparisonItem,
    ItemCandidate,
    Policy,
    PolicyFit,
    Prompt,
    Study,
)
from studies.steps import OnProgress, StepError, no_progress, screening
from studies.steps.fit import held_out_columns, predictions
from studies.steps.population import PromptPopulation, load_population
from studies.templatetags.safe_markdown import is_current_html, versioned_html
from workers.stats import study_design

# Attention-check candidates use negative sample indices, which generation never produces.
ATTENTION_LABEL = "attention"
# Fluent answers to questions no study prompt is likely to ask: the attention check's wrong answer
# when the study has no other prompt to borrow one from (`off_topic_text`).
OFF_TOPIC_ANSWERS = (
    "To repot a houseplant, water it the day before, ease it out of its old pot, loosen the roots "
    "gently and set it in fresh soil in a pot one size larger. Keep it out of direct sun for a week.",
    "For a simple vinaigrette, whisk three parts olive oil into one part vinegar with a spoonful of "
    "mustard, a pinch of salt and some black pepper, then taste and adjust before dressing the salad.",
    "The train from the city centre to the airport leaves every fifteen minutes from platform four; "
    "buy a ticket at the machine before boarding, as there is no conductor on board.",
)


@dataclass
class ItemDraft:
    key: dict[str, Any]
    fields: dict[str, Any]
    shown: list[tuple[int, int, int, int]]  # (candidate id, slot, c_A, c_B)

    @property
    def needs_judgment(self) -> bool:
        return bool(self.fields.get("needs_judgment", True))


def needs_judgment(shown: Sequence[object]) -> bool:
    """Whether a shown set needs a person: with one distinct text every pick is that text, and
    its credit c_A/(c_A+c_B) = k/(k+m) is decided by construction (theory.md §1)."""
    return len(shown) > 1


def judged_count(drafts: list[ItemDraft]) -> int:
    """How many of `drafts` an annotator will be asked to judge (the base of the attention-check rate)."""
    return sum(1 for draft in drafts if draft.needs_judgment)


def _item_rng(study: Study, *parts: int) -> np.random.Generator:
    return np.random.default_rng([study.seed, *parts])


def _shown_rows(rng: np.random.Generator, pp: PromptPopulation, draws_a: Sequence[int] | npt.NDArray[np.intp],
                draws_b: Sequence[int] | npt.NDArray[np.intp]) -> tuple[list[int], list[int], list[int]]:
    """Distinct texts of the k + m draws, in a shuffled slot order, with their counts."""
    count_a, count_b = Counter(int(i) for i in draws_a), Counter(int(i) for i in draws_b)
    distinct = sorted(set(count_a) | set(count_b))
    order = rng.permutation(len(distinct))
    shown = [distinct[i] for i in order]
    return shown, [count_a[j] for j in shown], [count_b[j] for j in shown]


Opponent = tuple[str, Policy | None, npt.NDArray[np.float64] | None]  # (label, policy, its fit)


def _opponents(policy: Policy, policies: list[Policy], fits: dict[tuple[int, int], npt.NDArray[np.float64]],
               k: int, m: int) -> list[Opponent]:
    """The adversary (label ADVERSARY, no policy), then every other policy with the fit it shows."""
    opponents: list[Opponent] = [(ComparisonItem.ADVERSARY, None, None)]
    for other in policies:
        if other.pk != policy.pk:
            # The opponent shows m samples: its fit for m shown samples when the study
            # fits that k, otherwise its fit at the item's k.
            sigma = fits.get((other.pk, m), fits[(other.pk, k)])
            opponents.append((other.name, other, sigma))
    return opponents


def draft_prompt_items(prompt: Prompt, policies: list[Policy], pp: PromptPopulation | None = None) -> list[ItemDraft]:
    """Every (policy, k, opponent, replicate) item of one prompt, drawn reproducibly from Study.seed."""
    study = prompt.study
    pp = pp or load_population(prompt)
    m = study.opponent_outputs
    fits = {
        (f.policy_id, f.k): np.asarray(f.probabilities, dtype=np.float64)
        for f in PolicyFit.objects.filter(prompt=prompt, policy__in=policies)
    }
    pool = held_out_columns(study, pp)
    drafts = []
    for policy in policies:
        for k in study.k_values:
            if (policy.pk, k) not in fits:
                raise StepError(f"policy {policy.name} has no fit at k={k} for prompt {prompt.pk}")
            pi = fits[(policy.pk, k)]
            model_adversary = predictions(pp, pi, k, m, pool).adversary  # the worst m-multiset
            # the adversary, or with the annotators' adversary every screened opponent (steps/screening.py)
            fixed = screening.adversary_opponents(study, pp, policy, pi, k, m, model_adversary)
            for label, other, sigma in _opponents(policy, policies, fits, k, m):
                for position, (fixed_label, adversary) in enumerate(fixed if sigma is None else [(label, ())]):
                    for replicate in range(study.replicates):
                        screen = (2, position) if position else ()  # the model's adversary keeps its stream
                        rng = _item_rng(study, prompt.pk, policy.pk, k, other.pk if other else 0, m, replicate, *screen)
                        draws_a = wp.sample_responses(pi, k, rng)
                        draws_b = list(adversary) if sigma is None else wp.sample_responses(sigma, m, rng)
                        key = {"prompt": prompt, "policy": policy, "k": k, "opponent_label": fixed_label, "m": m,
                               "replicate": replicate, "is_attention_check": False}
                        drafts.append(_item_draft(rng, pp, key, other, draws_a, draws_b))
    return drafts


def _item_draft(rng: np.random.Generator, pp: PromptPopulation, key: dict[str, Any], other: Policy | None,
                draws_a: Sequence[int] | npt.NDArray[np.intp], draws_b: Sequence[int] | npt.NDArray[np.intp]) -> ItemDraft:
    """The draft of one regular item from its draws: shown texts in a shuffled slot order."""
    shown, c_a, c_b = _shown_rows(rng, pp, draws_a, draws_b)
    n = pp.pop.n_responses
    values = {
        "study": key["prompt"].study,
        "opponent_policy": other,
        "predicted_win_rate": wp.expected_credit(
            pp.pop, np.bincount(np.asarray(draws_a, dtype=np.intp), minlength=n),
            np.bincount(np.asarray(draws_b, dtype=np.intp), minlength=n),
        ),
        "needs_judgment": needs_judgment(shown),
        "share": screening.item_share(key["prompt"].study, key["opponent_label"], key["replicate"]),
        "draw": {
            "policy": [pp.candidates[int(i)].pk for i in draws_a],
            "opponent": [pp.candidates[int(i)].pk for i in draws_b],
        },
    }
    rows = [(pp.candidates[j].pk, slot, a, b) for slot, (j, a, b) in enumerate(zip(shown, c_a, c_b, strict=True))]
    return ItemDraft(key, values, rows)


def off_topic_text(prompt: Prompt, avoid: set[str], rng: np.random.Generator) -> str:
    """The attention check's wrong answer: a fluent response to a different question.

    Scrambled words (the old way) were visibly broken, so checks stood out from real tasks. This
    reads as text like every response, and a careful reader still tells it apart at once, as it
    does not answer the prompt: another prompt's candidate of the same study (drawn with the
    item's seed), or one of `OFF_TOPIC_ANSWERS` when the study has no other prompt. `avoid`:
    this prompt's own texts, never used.
    """
    others = (
        Candidate.objects.filter(prompt__study_id=prompt.study_id, is_attention_check=False)
        .exclude(prompt=prompt).order_by("pk").values_list("text", flat=True)[:200]
    )  # fmt: skip
    texts = [t for t in others if t not in avoid and len(t.split()) >= 4] or [
        t for t in OFF_TOPIC_ANSWERS if t not in avoid
    ]
    return texts[int(rng.integers(len(texts)))]


def attention_check_count(study: Study, n_regular: int) -> int:
    """How many attention items make them `attention_check_rate` of the items annotators see.

    n_regular: the regular items that need judgment (`judged_count`); items decided by
    construction are never shown, so they don't call for checks. The rule is
    `workers.stats.study_design.attention_check_count`, which the planner counts with too.
    """
    return study_design.attention_check_count(study.attention_check_rate, n_regular)


def draft_attention_items(prompt: Prompt, count: int, pp: PromptPopulation | None = None) -> list[ItemDraft]:
    """`count` attention items for one prompt: good pool texts plus one off-topic text each.

    The good texts count as the "policy" side (c_A = 1) and the off-topic one as the
    "opponent" (c_B = 1), so picking a good text gives credit 1 and the off-topic one 0.
    The off-topic text is saved as a Candidate (generator None, negative sample index).
    """
    study = prompt.study
    pp = pp or load_population(prompt)
    pool = pp.columns(study.generator_id)
    drafts = []
    for replicate in range(count):
        rng = _item_rng(study, prompt.pk, 0, 0, 0, 0, replicate, 1)
        n_good = min(max(study.k_values), len(pool))
        good = [int(j) for j in rng.choice(pool, size=n_good, replace=False)]
        original = pp.candidates[good[0]]
        broken_text = off_topic_text(prompt, {c.text for c in pp.candidates}, rng)
        broken, _ = Candidate.objects.get_or_create(
            prompt=prompt,
            generator=None,
            sample_index=-(replicate + 1),
            defaults={
                "text": broken_text,
                "is_attention_check": True,
                "metadata": {"attention_check": True, "off_topic_for": original.pk},
            },
        )
        ids = [pp.candidates[j].pk for j in good] + [broken.pk]
        counts = [(1, 0)] * len(good) + [(0, 1)]
        order = rng.permutation(len(ids))
        rows = [(ids[i], slot, *counts[i]) for slot, i in enumerate(order)]
        key = {"prompt": prompt, "policy": None, "k": len(good), "opponent_label": ATTENTION_LABEL, "m": 1,
               "replicate": replicate, "is_attention_check": True}
        drafts.append(ItemDraft(key, {"study": study, "opponent_policy": None, "predicted_win_rate": None,
                                      "needs_judgment": True, "draw": {"good": ids[:-1], "broken": broken.pk}}, rows))
    return drafts


@dataclass
class ItemCounts:
    created: int = 0
    unchanged: int = 0
    replaced: int = 0
    kept_assigned: int = 0
    removed: int = 0

    def add(self, other: ItemCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def save_prompt_items(prompt: Prompt, drafts: list[ItemDraft]) -> ItemCounts:
    """Make the prompt's items equal to `drafts`, in one transaction, touching nothing needlessly.

    A rebuild with the same inputs changes nothing (items are keyed by `item_unique` /
    `attention_item_unique`). An item that differs is replaced only if nobody was assigned it;
    items already shown to annotators are never altered or deleted. An item whose shown set is
    one text is saved with needs_judgment False (`needs_judgment`), so it is never assigned.
    """
    counts = ItemCounts()
    with transaction.atomic():
        existing = {
            _key_of(item): item
            for item in ComparisonItem.objects.filter(prompt=prompt).prefetch_related("shown")
        }
        assigned = set(
            ComparisonItem.objects.filter(prompt=prompt, assignments__isnull=False).values_list("pk", flat=True)
        )
        wanted = set()
        for draft in drafts:
            key = _key_of_draft(draft.key)
            wanted.add(key)
            item = existing.get(key)
            if item is not None:
                same = sorted((s.candidate_id, s.slot, s.count_policy, s.count_opponent) for s in item.shown.all()) == sorted(draft.shown)
                if same or item.pk in assigned:
                    if same and item.pk not in assigned:
                        _refresh_derived(item, draft)
                    counts.unchanged += same
                    counts.kept_assigned += not same
                    continue
                item.delete()
                counts.replaced += 1
            else:
                counts.created += 1
            item = ComparisonItem.objects.create(**draft.key, **draft.fields, spread=_spread(prompt, key))
            ItemCandidate.objects.bulk_create(
                ItemCandidate(item=item, candidate_id=cid, slot=slot, count_policy=a, count_opponent=b)
                for cid, slot, a, b in draft.shown
            )
        for key, item in existing.items():
            if key not in wanted and item.pk not in assigned:
                item.delete()
                counts.removed += 1
        render_shown_candidates(prompt)
    return counts


def render_shown_candidates(prompt: Prompt) -> int:
    """Store the rendered Markdown of the prompt's candidates that items show (`Candidate.text_html`,
    by the annotator pages' safe renderer), so no task page renders it per request. Returns how many."""
    shown = Candidate.objects.filter(prompt=prompt, shown_in__isnull=False).distinct().only("pk", "text", "text_html")
    stale = [candidate for candidate in shown if not is_current_html(candidate.text_html)]
    for candidate in stale:
        candidate.text_html = versioned_html(candidate.text)
    Candidate.objects.bulk_update(stale, ["text_html"], batch_size=500)
    return len(stale)


def _spread(prompt: Prompt, key: tuple[object, ...]) -> int:
    """The item's place in the order annotators meet items (`ComparisonItem.spread`), drawn from
    Study.seed like everything else the items step draws: a study rebuilt from the same seed hands
    its items out in the same order (with one annotator at a time, the same items to the same
    people; tests/test_reproduction.py relies on it)."""
    digest = hashlib.blake2b(repr((prompt.study.seed, prompt.pk, key)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1  # 31 bits, as `new_spread`


def _refresh_derived(item: ComparisonItem, draft: ItemDraft) -> None:
    """Update the fields derived from an unchanged shown set (the prediction, whether it needs
    judging) when they differ, e.g. after a new population or on items built before the field."""
    changed = []
    if not _close(item.predicted_win_rate, draft.fields["predicted_win_rate"]):
        item.predicted_win_rate = draft.fields["predicted_win_rate"]
        changed.append("predicted_win_rate")
    if item.needs_judgment != draft.needs_judgment:
        item.needs_judgment = draft.needs_judgment
        changed.append("needs_judgment")
    if changed:
        item.save(update_fields=changed)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-12


def _key_of(item: ComparisonItem) -> tuple[object, ...]:
    if item.is_attention_check:  # attention_item_unique: one per (prompt, replicate)
        return (ATTENTION_LABEL, item.replicate)
    return (item.policy_id, item.k, item.opponent_label, item.m, item.replicate)


def _key_of_draft(key: dict[str, Any]) -> tuple[object, ...]:
    if key["is_attention_check"]:
        return (ATTENTION_LABEL, key["replicate"])
    return (key["policy"].pk, key["k"], key["opponent_label"], key["m"], key["replicate"])


def attention_checks_per_prompt(n_checks: int, n_prompts: int) -> list[int]:
    """`n_checks` attention checks spread over `n_prompts` prompts, the first ones taking the remainder."""
    return [n_checks // n_prompts + (i < n_checks % n_prompts) for i in range(n_prompts)]


def build_items(
    study: Study,
    *,
    populations: dict[int, PromptPopulation] | None = None,
    on_progress: OnProgress = no_progress,
) -> ItemCounts:
    """Every prompt's items and attention checks: draft the regular items, count the attention
    checks they call for (`attention_check_count`), spread them over the prompts, save each
    prompt's items in one transaction (`save_prompt_items`). Returns what changed.

    populations: prompt id → its population, when the caller has them loaded already.
    """
    policies = list(study.policies.order_by("id"))
    prompts = list(study.prompts.order_by("id"))
    populations = populations if populations is not None else {p.pk: load_population(p) for p in prompts}
    drafts = {p.pk: draft_prompt_items(p, policies, populations[p.pk]) for p in prompts}
    n_checks = attention_check_count(study, sum(judged_count(d) for d in drafts.values()))
    counts = ItemCounts()
    for i, (prompt, checks) in enumerate(zip(prompts, attention_checks_per_prompt(n_checks, len(prompts)), strict=True)):
        on_progress(i, len(prompts), f"Building items for prompt {i + 1} of {len(prompts)}")
        attention = draft_attention_items(prompt, checks, populations[prompt.pk])
        counts.add(save_prompt_items(prompt, drafts[prompt.pk] + attention))
    refresh_planner_statistics()
    return counts


ITEM_TABLES = (ComparisonItem, ItemCandidate, Candidate)


def refresh_planner_statistics() -> None:
    """ANALYZE the tables that the annotator's queries read, after a bulk load (PostgreSQL).

    Until autovacuum gets to them, the planner would plan the next pick's queries from the
    statistics of an empty study (an estimate of 3 open items where there are 20,000): a hash join
    over every candidate, a sort of every open item. Measured at 20,000 items, that made a pick's
    database time 22 ms instead of 6 (docs/benchmarks.md, #14). ANALYZE samples a fixed number of
    rows, so this takes a moment whatever the study's size.
    """
    if connection.vendor != "postgresql":
        return
    tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in ITEM_TABLES)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}")


def build_study_items(study: Study, *, on_progress: OnProgress = no_progress) -> dict[str, Any]:
    """`build_items`, reported as the items step's record: the study's items by kind and what changed."""
    counts = build_items(study, on_progress=on_progress)
    items = study.items.filter(is_attention_check=False)
    return {
        "items": items.count(),
        "decided_items": items.filter(needs_judgment=False).count(),
        "attention_checks": study.items.filter(is_attention_check=True).count(),
        **asdict(counts),
    }
