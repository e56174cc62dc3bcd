"""Attention checks that read like real tasks (#25): the wrong answer is a fluent answer to a
different prompt (not scrambled words), and Markdown tables render without inline styles (CSP)."""

from __future__ import annotations

import numpy as np
import pytest

from studies.models import Candidate, ComparisonItem
from studies.steps.items import OFF_TOPIC_ANSWERS, off_topic_text
from studies.templatetags.safe_markdown import render_safe_markdown
from tests.csv_study import csv_study, prepare

pytestmark = pytest.mark.django_db


def test_the_checks_wrong_answer_is_another_prompts_answer_word_for_word():
    study, prompts = csv_study(n_prompts=3, attention_check_rate=0.25)
    prepare(study, prompts)
    checks = ComparisonItem.objects.filter(study=study, is_attention_check=True).prefetch_related("shown__candidate")
    assert checks.exists()
    for item in checks:
        wrong = [s.candidate for s in item.shown.all() if s.candidate.is_attention_check]
        assert len(wrong) == 1
        own = set(Candidate.objects.filter(prompt=item.prompt, is_attention_check=False).values_list("text", flat=True))
        assert wrong[0].text not in own
        # Text as written (the words in their order) by another prompt's candidate: it reads as text.
        assert Candidate.objects.filter(prompt__study=study, is_attention_check=False, text=wrong[0].text) \
            .exclude(prompt=item.prompt).exists()


def test_a_study_with_one_prompt_borrows_a_fixed_off_topic_answer():
    study, prompts = csv_study(n_prompts=1)
    text = off_topic_text(prompts[0], set(), np.random.default_rng(0))
    assert text in OFF_TOPIC_ANSWERS
    assert off_topic_text(prompts[0], {OFF_TOPIC_ANSWERS[0], OFF_TOPIC_ANSWERS[1]},
                          np.random.default_rng(0)) == OFF_TOPIC_ANSWERS[2]  # fmt: skip


def test_table_alignment_renders_as_classes_not_inline_styles():
    html = render_safe_markdown("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")
    assert "style=" not in html
    assert '<th class="align-left">a</th>' in html
    assert '<td class="align-center">2</td>' in html
    assert '<td class="align-right">3</td>' in html
