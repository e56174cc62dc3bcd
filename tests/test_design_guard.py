"""The design of a study that has left draft (or has items) is fixed: read-only in the admin,
imports refused with the reason, and "copy as a new draft study" instead (issue #12, deliverable 2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies import services
from studies.admin.study import StudyAdmin
from studies.importing import import_prompts
from studies.models import (
    ComparisonItem,
    Participant,
    Policy,
    PreferenceSource,
    Prompt,
    Study,
    StudyQuestion,
)
from tests.factories import (
    make_generator,
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db


def study_with_items(**overrides) -> Study:
    fields = {"status": Study.Status.LIVE, "k_values": [1, 2], "generator": make_generator(), **overrides}
    study = make_study(**fields)
    policy = make_policy(study=study, name="u-align", kind=Policy.Kind.MULTIPLAYER, params={"eps": 0.01})
    PreferenceSource.objects.create(study=study, kind=PreferenceSource.Kind.PERSONA_JUDGE,
                                    params={"personas": ["terse", "kind"]}, weight=2.0)
    PreferenceSource.objects.create(study=study, kind=PreferenceSource.Kind.CSV, data="type,candidate_id,utility\nt,1,1")
    prompt = make_prompt(study=study, text="What is tea?", external_id="q1", metadata={"topic": "tea"})
    make_item(study=study, prompt=prompt, policy=policy, texts=["a", "b"], counts=[(1, 0), (0, 1)], k=1)
    return study


def change_page(client, study: Study):
    return client.get(reverse("admin:studies_study_change", args=[study.pk]))


def test_the_fields_that_make_the_items_are_read_only_once_the_study_has_items(researcher_client):
    draft = make_study()
    editable = change_page(researcher_client, draft).context["adminform"].form.fields
    assert set(StudyAdmin.DESIGN_FIELDS) <= set(editable)

    for study in (study_with_items(), study_with_items(status=Study.Status.DRAFT)):
        response = change_page(researcher_client, study)
        fields = response.context["adminform"].form.fields
        assert not set(StudyAdmin.DESIGN_FIELDS) & set(fields)
        assert {"title", "items_per_participant", "max_participants", "assignment_timeout"} <= set(fields)
        html = response.content.decode()
        assert 'name="k_values"' not in html
        assert "so its design is fixed" in html
        assert reverse("admin:studies_study_copy", args=[study.pk]) in html


def test_a_fixed_design_keeps_its_values_when_the_form_is_posted(researcher_client):
    study = study_with_items(k_values=[1, 2], max_participants=5)
    form = change_page(researcher_client, study).context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields}
    data.update({"k_values": "[8]", "opponent_outputs": "3", "max_participants": "7",
                 "assignment_timeout": "00:45:00"})
    for prefix in ("policies", "preference_sources", "question"):  # the inlines: nothing posted in them
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    response = researcher_client.post(reverse("admin:studies_study_change", args=[study.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    study.refresh_from_db()
    assert (study.k_values, study.opponent_outputs) == ([1, 2], 1)  # the design stays
    assert (study.max_participants, study.assignment_timeout) == (7, timedelta(minutes=45))  # the rest changes
    assert study.policies.count() == 1
    assert study.preference_sources.count() == 2


def test_policies_and_sources_of_a_fixed_study_are_read_only_inline_and_on_their_own_pages(researcher_client):
    study = study_with_items()
    html = change_page(researcher_client, study).content.decode()
    assert 'name="policies-0-name"' not in html
    assert 'name="preference_sources-0-params"' not in html
    assert 'name="policies-MAX_NUM_FORMS" value="0"' in html  # no row can be added

    policy = study.policies.get()
    url = reverse("admin:studies_policy_change", args=[policy.pk])
    assert b'name="_save"' not in researcher_client.get(url).content
    assert researcher_client.post(url, {"name": "renamed", "kind": "sample", "study": study.pk}).status_code == 403
    assert Policy.objects.get(pk=policy.pk).name == "u-align"
    response = researcher_client.post(reverse("admin:studies_policy_add"),
                                      {"name": "extra", "kind": "sample", "params": "{}", "study": study.pk})
    assert response.status_code == 200
    assert "so its design is fixed" in response.content.decode()
    assert study.policies.count() == 1


def test_prompts_of_a_fixed_study_cannot_be_added_changed_or_deleted(researcher_client):
    study = study_with_items()
    prompt = study.prompts.get()
    add = researcher_client.post(reverse("admin:studies_prompt_add"), {"study": study.pk, "text": "New?", "metadata": "{}"})
    assert "so its design is fixed" in add.content.decode()
    change = reverse("admin:studies_prompt_change", args=[prompt.pk])
    assert researcher_client.post(change, {"study": study.pk, "text": "Edited", "metadata": "{}"}).status_code == 403
    assert researcher_client.post(reverse("admin:studies_prompt_delete", args=[prompt.pk]),
                                  {"post": "yes"}).status_code == 403
    spare = make_prompt(study=study, text="Spare, in no item")
    bulk = researcher_client.post(reverse("admin:studies_prompt_changelist"),
                                  {"action": "delete_selected", "_selected_action": [spare.pk], "post": "yes"})
    assert bulk.status_code == 403  # the admin asks has_delete_permission of every row
    assert list(study.prompts.values_list("text", flat=True)) == ["What is tea?", "Spare, in no item"]


@pytest.mark.parametrize("status", [Study.Status.PREPARING, Study.Status.READY, Study.Status.LIVE,
                                    Study.Status.PAUSED, Study.Status.CLOSED])
def test_an_import_into_a_study_that_is_not_a_draft_is_refused_with_the_reason(researcher_client, status):
    study = make_study(status=status)
    url = reverse("admin:studies_study_import_prompts", args=[study.pk])
    page = researcher_client.get(url)
    assert "so its design is fixed" in page.content.decode()
    assert b'type="file"' not in page.content
    response = researcher_client.post(url, {"file": SimpleUploadedFile("p.csv", b"text\nHello\n")})
    assert response.status_code == 409
    assert "so its design is fixed" in response.content.decode()
    assert not Prompt.objects.filter(study=study).exists()

    report = import_prompts(study=study, filename="p.csv", data=b"text\nHello\n")
    assert not report.ok
    assert "so its design is fixed" in str(report.errors[0])
    with pytest.raises(services.DesignFixed, match="so its design is fixed"):
        services.start_prompt_import(study=study, filename="p.csv", data=b"text\nHello\n")
    assert not Prompt.objects.filter(study=study).exists()
    assert not study.jobs.exists()


def test_copy_as_a_new_draft_takes_the_design_but_no_candidates_items_or_judgments():
    study = study_with_items(title="Tea study", max_participants=40, pool_size=12, attention_check_rate=0.25,
                             completion_redirect_url="https://app.prolific.com/submissions/complete?cc=X")
    make_participant(study=study)
    live = study.status
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DRAFT)  # asked before going live, as the admin does
    StudyQuestion.objects.create(study=study, kind="threshold", policy=study.policies.get(), k=study.k_values[0],
                                 threshold=0.8, margin=0.02, alpha=0.1, on_answer="tell")  # fmt: skip
    Study.objects.filter(pk=study.pk).update(status=live)
    StudyQuestion.objects.filter(study=study).update(answer=StudyQuestion.Answer.NO, answer_text="answered")
    copy = services.copy_study_as_draft(study=study)

    question = StudyQuestion.objects.get(study=copy)  # the copy's own, on its own policy, not yet answered
    assert question.policy.study_id == copy.pk
    assert (question.kind, question.k, question.threshold, question.margin, question.alpha, question.on_answer) == (
        "threshold", study.k_values[0], 0.8, 0.02, 0.1, "tell")
    assert (question.answer, question.answer_text, question.answered_at) == ("", "", None)
    assert (copy.status, copy.title, copy.slug) == (Study.Status.DRAFT, "Tea study (copy)", f"{study.slug}-copy")
    for field in ("k_values", "opponent_outputs", "pool_size", "attention_check_rate", "max_participants",
                  "consent_text", "instructions", "generator_id", "assignment_timeout", "seed"):
        assert getattr(copy, field) == getattr(study, field), field
    assert copy.invite_token != study.invite_token
    assert copy.completion_code != study.completion_code
    assert copy.completion_redirect_url == ""
    assert list(copy.policies.values_list("name", "kind", "params")) == [("u-align", "multiplayer", {"eps": 0.01})]
    sources = list(copy.preference_sources.order_by("id").values_list("kind", "params", "weight", "data"))
    assert sources == [("persona_judge", {"personas": ["terse", "kind"]}, 2.0, ""), ("csv", {}, 1.0, "")]
    assert list(copy.prompts.values_list("text", "external_id", "metadata")) == [("What is tea?", "q1", {"topic": "tea"})]
    assert not ComparisonItem.objects.filter(study=copy).exists()
    assert not Participant.objects.filter(study=copy).exists()
    assert copy.design_fixed_reason() == ""
    assert services.copy_study_as_draft(study=study).slug == f"{study.slug}-copy-2"
    assert study.items.count() == 1
    assert study.prompts.count() == 1


def test_the_copy_page_confirms_then_copies_and_needs_the_add_study_permission(researcher_client, client,
                                                                                  django_user_model):
    study = study_with_items()
    url = reverse("admin:studies_study_copy", args=[study.pk])
    assert b"Copy as a new draft study?" in researcher_client.get(url).content
    assert Study.objects.count() == 1
    response = researcher_client.post(url)
    copy = Study.objects.exclude(pk=study.pk).get()
    assert response["Location"] == reverse("admin:studies_study_change", args=[copy.pk])

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_study", "change_study"]))
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    assert Study.objects.count() == 2
