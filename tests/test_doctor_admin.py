"""LLMdoctor's pairs in the admin and the exports: built from judgments, exported as CSV, imported
back (every row checked, nothing saved on a bad one), and the doctors' training on the policy page."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies.models import Assignment, Doctor, Judgment, Policy, PreferencePair
from studies.steps import doctor as doctor_step
from tests.factories import (
    make_item,
    make_participant,
    make_policy,
    make_prompt,
    make_study,
)
from workers.doctor.pairs import TextPair as Pair

pytestmark = pytest.mark.django_db


def judge(item, participant, slot: int | None) -> Judgment:
    assignment = Assignment.objects.create(participant=participant, item=item, status=Assignment.Status.COMPLETED)
    chosen = item.shown.get(slot=slot) if slot is not None else None
    return Judgment.objects.create(assignment=assignment, chosen=chosen, chosen_slot=slot, cant_decide=chosen is None)


def test_pairs_from_judgments_set_the_picked_text_against_each_other_shown_text():
    study = make_study()
    prompt = make_prompt(study=study, text="Name a colour.")
    policy = make_policy(study=study)
    item = make_item(study=study, prompt=prompt, policy=policy, texts=["Red.", "Blue.", "Green."],
                     counts=[(1, 0), (1, 0), (0, 1)])
    real, bot = make_participant(study=study), make_participant(study=study, is_simulated=True)
    judge(item, real, 1)
    judge(item, bot, 0)
    judge(make_item(study=study, prompt=prompt, policy=policy, texts=["Red.", "Blue."], counts=[(1, 0), (0, 1)],
                    replicate=1), real, None)  # "can't decide": no pair

    pairs = doctor_step.judgment_pairs(study, "real")
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("Name a colour.", "Blue.", "Red."), ("Name a colour.", "Blue.", "Green.")]
    assert len(doctor_step.judgment_pairs(study, "all")) == 4


def test_the_pairs_export_imports_back_into_another_study_exactly(researcher_client):
    study, other = make_study(), make_study()
    doctor_step.store_pairs(study, "population:per_type:extremes", [
        Pair("Say hi.", "=HYPERLINK(\"x\")", "-1", 0.25, "type:persona_judge-1: terse"),
        Pair("Say hi.", "Hello, friend!\nHow are you?", "'quoted'", 1.0, "weighted"),
    ])

    response = researcher_client.get(reverse("studies:export", args=[study.slug, "pairs"]))
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body.splitlines()[0] == b"prompt,chosen,rejected,weight,source"
    assert b"'=HYPERLINK" in body  # the formula guard

    url = reverse("admin:studies_study_import_pairs", args=[other.pk])
    response = researcher_client.post(url, {"file": SimpleUploadedFile("pairs.csv", body, "text/csv")})
    assert response.status_code == 302
    got = list(other.preference_pairs.order_by("id").values_list("pair_set", "prompt_text", "chosen", "rejected",
                                                                  "weight", "source"))
    assert got == [
        ("csv", "Say hi.", "=HYPERLINK(\"x\")", "-1", 0.25, "type:persona_judge-1: terse"),
        ("csv", "Say hi.", "Hello, friend!\nHow are you?", "'quoted'", 1.0, "weighted"),
    ]


@pytest.mark.parametrize(
    ("csv_text", "fragment"),
    [
        ("prompt,chosen\nq,a\n", "missing column(s) rejected"),
        ("prompt,chosen,rejected\nq,a,b\nq,same,same\n", "line 3: chosen: equals rejected"),
        ("prompt,chosen,rejected,weight\nq,a,b,-2\n", "weight"),
        ("prompt,chosen,rejected\nq,a\u0007,b\n", "pair 1: chosen contains the control character U+0007"),
        ("prompt,chosen,rejected\n", "the file has no pairs"),
    ],
)
def test_a_bad_pairs_csv_is_refused_row_by_row_and_nothing_is_saved(researcher_client, csv_text, fragment):
    study = make_study()
    doctor_step.store_pairs(study, "csv", [Pair("q", "kept", "as before")])
    url = reverse("admin:studies_study_import_pairs", args=[study.pk])
    response = researcher_client.post(url, {"file": SimpleUploadedFile("p.csv", csv_text.encode(), "text/csv")})
    assert response.status_code == 200
    assert fragment in response.content.decode()
    assert list(study.preference_pairs.values_list("chosen", flat=True)) == ["kept"]


def test_a_non_utf8_pairs_file_gets_a_readable_error(researcher_client):
    study = make_study()
    url = reverse("admin:studies_study_import_pairs", args=[study.pk])
    response = researcher_client.post(url, {"file": SimpleUploadedFile("p.csv", b"prompt,chosen,rejected\n\xff,a,b\n")})
    assert response.status_code == 200
    assert "not UTF-8" in response.content.decode()
    assert not PreferencePair.objects.exists()


def test_pairs_export_and_import_need_the_permissions_of_judgments_and_changes(client, django_user_model):
    study = make_study()
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("studies:export", args=[study.slug, "pairs"])).status_code == 403
    url = reverse("admin:studies_study_import_pairs", args=[study.pk])
    assert client.post(url, {"file": SimpleUploadedFile("p.csv", b"prompt,chosen,rejected\nq,a,b\n")}).status_code == 403
    assert not PreferencePair.objects.exists()


def test_the_policy_and_study_pages_show_the_doctors_training_and_the_pairs(researcher_client):
    study = make_study()
    policy = make_policy(study=study, name="doc", kind=Policy.Kind.DOCTOR)
    Doctor.objects.create(policy=policy, position=0, key="ab" * 32, status=Doctor.Status.TRAINING, step=3, steps=10,
                          loss=1.25)
    doctor_step.store_pairs(study, "csv", [Pair("q", "a", "b")])

    page = researcher_client.get(reverse("admin:studies_policy_change", args=[policy.pk])).content.decode()
    assert "ab" * 32 in page
    study_page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert "step 3/10 · loss 1.25" in study_page
    assert "1 preference pairs" in study_page
    assert reverse("admin:studies_study_import_pairs", args=[study.pk]) in study_page
