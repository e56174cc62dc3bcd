"""Build judgments directly (as the annotator flow of issue #5 records them) for results and export tests,
and the judged study the results tests share (the `judged_study` fixture in tests/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from studies.models import (
    Assignment,
    ComparisonItem,
    Judgment,
    Participant,
    PolicyFit,
    Study,
)
from tests.factories import (
    make_attention_item,
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)

# Canonical slot picked by each annotator on prompts 0, 1, 2.
ADVERSARY_PICKS = {"u1": [0, 1, 1], "u2": [1, 1, 0], "u3": [1, 0, 1]}  # slot 0 credits ½, slot 1 credits 1
BETA_PICKS = {"u1": [0, 0, 1], "u2": [1, 0, 1], "u3": [0, 1, 1]}  # slot 0 credits 1, slot 1 credits 0


def make_judgment(*, item: ComparisonItem, participant: Participant, pick: int | None, reverse: bool = False,
                  latency_ms: int | None = 1500, attention_passed: bool | None = None, rationale: str = "") -> Judgment:
    """`participant` judges `item` and picks the text in canonical slot `pick` (None: can't decide).

    The texts are displayed in slot order, or reversed with reverse=True; chosen_slot is the
    1-based displayed position, credit follows theory.md §1 and the study's can't-decide rule.
    """
    shown = list(item.shown.order_by("slot"))
    order = [ic.pk for ic in (reversed(shown) if reverse else shown)]
    now = timezone.now()
    assignment = Assignment.objects.create(
        participant=participant, item=item, display_order=order, status=Assignment.Status.COMPLETED,
        assigned_at=now - timedelta(seconds=30), rendered_at=now - timedelta(seconds=20), completed_at=now,
    )
    chosen = shown[pick] if pick is not None else None
    if item.is_attention_check:
        credit = None
    elif chosen is not None:
        credit = chosen.credit
    elif item.study.cant_decide_analysis == Study.CantDecide.TIE:
        credit = item.k / (item.k + item.m)
    else:
        credit = None
    return Judgment.objects.create(
        assignment=assignment, chosen=chosen, chosen_slot=order.index(chosen.pk) + 1 if chosen else None,
        cant_decide=chosen is None, credit=credit, attention_passed=attention_passed, latency_ms=latency_ms,
        rendered_at=assignment.rendered_at, rationale=rationale,
    )


def make_judged_study() -> Study:
    """Study "tea": policy alpha against the adversary and against policy beta on three prompts, each
    judged by u1..u3 (ADVERSARY_PICKS, BETA_PICKS); on a fourth prompt a can't-decide and an attention
    check (one pass, one fail); one simulated annotator's pick."""
    study = make_study(slug="tea", k_values=[2], status=Study.Status.LIVE, allow_cant_decide=True)
    alpha = make_policy(study=study, name="alpha")
    beta = make_policy(study=study, name="beta")
    people = {name: make_participant(study=study) for name in ADVERSARY_PICKS}
    prompts = [make_prompt(study=study, external_id=f"p{i}") for i in range(4)]
    for i, prompt in enumerate(prompts[:3]):
        vs_adversary = make_item(study=study, prompt=prompt, policy=alpha, texts=[f"shared {i}", f"own {i}"],
                                 counts=[(1, 1), (1, 0)], predicted_win_rate=0.8)
        vs_beta = make_item(study=study, prompt=prompt, policy=alpha, texts=[f"alpha {i}", f"beta {i}"],
                            counts=[(2, 0), (0, 1)], opponent_label="beta", opponent_policy=beta,
                            predicted_win_rate=0.5)
        for name, person in people.items():
            make_judgment(item=vs_adversary, participant=person, pick=ADVERSARY_PICKS[name][i], reverse=i == 1)
            make_judgment(item=vs_beta, participant=person, pick=BETA_PICKS[name][i])
        PolicyFit.objects.create(policy=alpha, prompt=prompt, k=2, candidate_ids=[], probabilities=[],
                                 certificate_kind="none", predicted_robust_win_rate=0.6 + 0.1 * i)
    undecided = make_item(study=study, prompt=prompts[3], policy=alpha, texts=["a", "b"], counts=[(2, 0), (0, 1)])
    make_judgment(item=undecided, participant=people["u1"], pick=None)
    check = make_attention_item(study=study, prompt=prompts[3], texts=["fine", "gibberish"], broken=1)
    make_judgment(item=check, participant=people["u1"], pick=0, attention_passed=True)
    make_judgment(item=check, participant=people["u2"], pick=1, attention_passed=False)
    robot = make_participant(study=study, is_simulated=True)
    make_judgment(item=ComparisonItem.objects.filter(opponent_label="adversary").first(), participant=robot, pick=0)
    return study
