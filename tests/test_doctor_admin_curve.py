"""The doctor's training curve on its policy's admin page (issue #23): an SVG drawn from the stored
history, numbers only, so a crafted history can't put markup on the page."""

from __future__ import annotations

from django.contrib import admin

from studies.admin.study import DoctorInline
from studies.models import Doctor, Policy


def test_the_policy_page_draws_each_doctors_training_curve():
    inline = DoctorInline(Policy, admin.site)
    history = [{"step": s, "loss": 10.0 / s, "subtb": 8.0 / s, "hinge": 0.1 * s, "margin": 0.2 * s} for s in (1, 2, 3)]
    svg = inline.training_curve(Doctor(history=history))
    assert svg.startswith("<svg")
    assert "SubTB" in svg
    assert "held-out margin" in svg


def test_a_history_with_markup_in_it_draws_no_markup():
    inline = DoctorInline(Policy, admin.site)
    svg = inline.training_curve(Doctor(history=[{"step": 1, "loss": "<script>alert(1)</script>", "subtb": 1.0}]))
    assert "<script" not in svg
