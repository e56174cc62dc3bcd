"""Build judgments directly (as the annotator flow of issue #5 records them) for results and export tests."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from studies.models import Assignment, ComparisonItem, Judgment, Participant, Study


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
