"""The researcher's preview of the annotator's path (#25): real pages and items, nothing saved."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from studies.models import Assignment, Judgment, Participant, Study
from tests.annotator import HX
from tests.factories import make_attention_item, make_live_study, make_prompt

pytestmark = pytest.mark.django_db


def _step(study: Study, step: str) -> str:
    return reverse("studies:preview_step", args=[study.slug, step])


def _counts() -> tuple[int, int, int]:
    return Participant.objects.count(), Assignment.objects.count(), Judgment.objects.count()


@pytest.mark.parametrize("status", [Study.Status.LIVE, Study.Status.DRAFT])
def test_a_researcher_walks_the_whole_path_with_real_items_and_nothing_is_saved(researcher_client, status):
    study = make_live_study(3, status=status, items_per_participant=3, consent_text="Consent **words**",
                            allow_cant_decide=True)  # fmt: skip
    items_before = list(study.items.values_list("pk", "live_assignments"))
    before = _counts()

    consent = researcher_client.get(reverse("studies:preview", args=[study.slug]))
    assert consent.status_code == 200
    assert b'id="preview-banner"' in consent.content
    assert b"Consent <strong>words</strong>" in consent.content
    assert researcher_client.post(reverse("studies:preview", args=[study.slug]),
                                  {"decision": "accept"})["Location"] == _step(study, "instructions")  # fmt: skip
    instructions = researcher_client.get(_step(study, "instructions"))
    assert b'id="preview-banner"' in instructions.content
    assert researcher_client.post(_step(study, "instructions"))["Location"] == _step(study, "task")

    seen = []
    page = researcher_client.get(_step(study, "task"))
    for n in range(3):
        assert page.status_code == 200
        assert (n > 0 or b'id="preview-banner"' in page.content)
        assert f"Task {n + 1} of 3".encode() in page.content
        assert b"I can't decide" in page.content
        seen.extend(i for i in range(3) if f"Prompt number {i}<".encode() in page.content)
        page = researcher_client.post(_step(study, "task"), {"n": n, "choice": 1}, headers=HX)
    assert page["HX-Redirect"] == _step(study, "done")
    assert sorted(seen) == [0, 1, 2]  # each real item once
    done = researcher_client.get(_step(study, "done"))
    assert b'id="preview-banner"' in done.content
    assert study.completion_code.encode() in done.content
    assert b"data-auto-redirect" not in done.content  # a preview never sends the researcher to Prolific

    assert _counts() == before == (0, 0, 0)
    assert list(study.items.values_list("pk", "live_assignments")) == items_before


def test_a_preview_pick_says_it_was_not_saved_and_posts_to_the_preview(researcher_client):
    study = make_live_study(2)
    page = researcher_client.get(_step(study, "task"))
    assert _step(study, "task").encode() in page.content
    assert reverse("studies:submit_judgment", args=[study.slug]).encode() not in page.content
    following = researcher_client.post(_step(study, "task"), {"n": 0, "cant_decide": "on"}, headers=HX)
    assert b"was not saved" in following.content
    assert b"Task 2 of 2" in following.content
    bad = researcher_client.post(_step(study, "task"), {"n": 0}, headers=HX)
    assert bad.status_code == 400
    assert _counts() == (0, 0, 0)


def test_the_preview_shows_an_attention_check_early(researcher_client):
    study = make_live_study(3, items_per_participant=3, attention_check_rate=0.2)
    check = make_attention_item(study=study, prompt=make_prompt(study=study, text="Check"), texts=["Good", "Off"],
                                broken=1)  # fmt: skip
    researcher_client.get(_step(study, "task"))
    second = researcher_client.post(_step(study, "task"), {"n": 0, "choice": 1})
    assert second.status_code == 302
    page = researcher_client.get(second["Location"])
    assert page.context["item"].pk == check.pk
    assert _counts() == (0, 0, 0)


def test_only_staff_with_view_permission_may_preview(client, outsider, django_user_model):
    study = make_live_study()
    assert client.get(reverse("studies:preview", args=[study.slug])).status_code == 403  # anonymous
    client.force_login(outsider)
    assert client.get(_step(study, "task")).status_code == 403
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(_step(study, "task")).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_study"))
    client.force_login(django_user_model.objects.get(pk=staff.pk))
    assert client.get(_step(study, "task")).status_code == 200
    assert client.get(_step(study, "nowhere")).status_code == 404
    assert client.get(reverse("studies:preview", args=["no-such-study"])).status_code == 404


def test_the_study_page_links_the_preview_and_the_live_link_still_makes_a_participant(researcher_client):
    study = make_live_study()
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk]))
    assert reverse("studies:preview", args=[study.slug]).encode() in page.content
    researcher_client.post(reverse("studies:join", args=[study.slug]), {"invite": study.invite_token})
    assert Participant.objects.filter(study=study).count() == 1
