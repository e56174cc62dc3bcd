"""Bring your own candidates: pools imported from JSONL or CSV, checked row by row (nothing saved when
any row is bad), and a study prepared from them without a generator."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from studies import services
from studies.candidate_import import import_candidates
from studies.models import (
    Candidate,
    ComparisonItem,
    Job,
    PolicyFit,
    Prompt,
    Study,
)
from studies.tasks import (
    build_items,
    build_populations,
    fit_policies,
    generate_candidates,
)
from tests.csv_study import POOLS_CSV, byo_study
from tests.factories import make_generator, make_prompt, make_study

pytestmark = pytest.mark.django_db

def pools(study: Study) -> dict[str, list[tuple[str, int, list[str]]]]:
    out: dict[str, list] = {}
    for c in Candidate.objects.filter(prompt__study=study).order_by("prompt_id", "sample_index"):
        out.setdefault(c.prompt.external_id, []).append((c.text, c.multiplicity, c.metadata["sources"]))
    return out


def test_a_csv_of_pools_creates_prompts_and_merges_identical_texts_adding_their_counts():
    study = make_study()

    report = import_candidates(study=study, filename="pools.csv", data=POOLS_CSV.encode())

    assert report.ok, report.errors
    assert (report.prompts_created, report.prompts_matched, report.candidates) == (2, 0, 6)
    assert dict(Prompt.objects.filter(study=study).values_list("external_id", "text")) == {
        "tea": "How do I brew green tea?", "sky": "Why is the sky blue?"}
    assert pools(study)["tea"] == [
        ("Use water at 80 °C for two minutes.", 5, ["model-a", "model-b"]),
        ("Boil it hard for ten minutes.", 1, ["model-b"]),
        ("Steep it briefly, then taste.", 1, []),
    ]
    assert Candidate.objects.filter(prompt__study=study, generator__isnull=False).count() == 0


def test_a_jsonl_pool_matches_an_existing_prompt_by_external_id():
    study = make_study()
    existing = make_prompt(study=study, external_id="tea", text="How do I brew green tea?")
    lines = [
        {"external_id": "tea", "candidates": ["Short answer.", {"text": "Long answer.", "count": 4, "source": "m"}]},
        {"external_id": "sky", "prompt": "Why is the sky blue?", "candidate": "Scattering.", "count": 2},
    ]

    report = import_candidates(study=study, filename="pools.jsonl", data="\n".join(map(json.dumps, lines)).encode())

    assert report.ok, report.errors
    assert (report.prompts_created, report.prompts_matched, report.candidates) == (1, 1, 3)
    assert [c.text for c in existing.candidates.order_by("sample_index")] == ["Short answer.", "Long answer."]
    assert pools(study)["sky"] == [("Scattering.", 2, [])]


@pytest.mark.parametrize(("line", "problem"), [
    ("tea,,An answer for a prompt without text,1,", "line 2: external_id 'tea' is not in the study: give its prompt text"),
    ("tea,Tea?,An answer,0,", "line 2: count must be a whole number from 1 to 1000000"),
    ("tea,Tea?,An answer,٣,", "line 2: count must be a whole number"),
    ("tea,Tea?,An \x07answer,1,", "line 2: candidate text contains the control character U+0007"),
    (",Tea?,An answer,1,", "line 2: external_id is missing"),
    ("tea,Tea?,,1,", "line 2: candidate text is missing or empty"),
    ("tea,Tea?,An answer,1", "line 2: 4 fields where the header has 5"),
])
def test_one_bad_row_saves_nothing_and_says_which_line(line, problem):
    study = make_study()
    data = f"external_id,prompt,candidate,count,source\n{line}\nsky,Why blue?,Scattering.,1,\n".encode()

    report = import_candidates(study=study, filename="pools.csv", data=data)

    assert not report.ok
    assert any(str(e).startswith(problem) for e in report.errors), report.errors
    assert not Prompt.objects.filter(study=study).exists()
    assert not Candidate.objects.filter(prompt__study=study).exists()


@pytest.mark.parametrize(("data", "problem"), [
    ('{"external_id": "a", "prompt": "P", "candidates": [NaN]}', "NaN is not allowed"),
    ('{"external_id": "a", "prompt": "P", "candidates": []}', "candidates must be a non-empty list"),
    ('["a", "b"]', "each line must be a JSON object"),
    ('{"external_id": true, "prompt": "P", "candidate": "x"}', "external_id is missing"),
    ('{"external_id": "a", "prompt": "P", "candidate": "x", "count": 2.5}', "count must be a whole number"),
])
def test_hostile_jsonl_is_refused_with_a_message(data, problem):
    study = make_study()

    report = import_candidates(study=study, filename="pools.jsonl", data=data.encode())

    assert not report.ok
    assert problem in " ".join(map(str, report.errors))
    assert not Prompt.objects.filter(study=study).exists()


def test_a_prompt_text_that_contradicts_the_stored_one_or_a_prompt_with_candidates_is_refused():
    study = make_study()
    make_prompt(study=study, external_id="tea", text="How do I brew green tea?")
    import_candidates(study=study, filename="a.csv", data=b"external_id,candidate\ntea,First pool.\n")

    again = import_candidates(study=study, filename="b.csv", data=b"external_id,candidate\ntea,Second pool.\n")
    other = import_candidates(study=study, filename="c.csv", data=b"external_id,prompt,candidate\ntea,Tea?,x\n")

    assert "prompt 'tea' already has candidates" in str(again.errors[0])
    assert "already in this study with another prompt text" in str(other.errors[0])
    assert Candidate.objects.filter(prompt__study=study).count() == 1


def test_only_a_draft_study_without_a_generator_takes_imported_candidates():
    with_generator = make_study(generator=make_generator())
    live = make_study(status=Study.Status.LIVE)
    data = b"external_id,prompt,candidate\ntea,Tea?,An answer.\n"

    for study, problem in [(with_generator, "clear the study's generator"), (live, "only be imported into a draft")]:
        report = import_candidates(study=study, filename="pools.csv", data=data)
        assert problem in str(report.errors[0])
    assert not Prompt.objects.exists()


def test_the_row_cap_and_the_candidates_per_prompt_cap_hold(settings):
    settings.UALIGN_IMPORT_MAX_ROWS = 3
    settings.UALIGN_IMPORT_MAX_CANDIDATES = 2
    study = make_study()
    rows = "\n".join(f"p{i},Prompt {i},Answer {i}" for i in range(5))
    many = "\n".join(f"p,Prompt,Answer {i}" for i in range(3))

    too_many_rows = import_candidates(study=study, filename="a.csv", data=f"external_id,prompt,candidate\n{rows}".encode())
    too_many_texts = import_candidates(study=study, filename="b.csv", data=f"external_id,prompt,candidate\n{many}".encode())

    assert "more than 3 candidates" in str(too_many_rows.errors[-1])
    assert "more than 2 distinct candidates" in str(too_many_texts.errors[0])
    assert not Prompt.objects.filter(study=study).exists()


def test_the_study_page_imports_candidates_and_shows_every_problem(researcher_client):
    study = make_study()
    url = reverse("admin:studies_study_import_candidates", args=[study.pk])
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert url in page

    bad = researcher_client.post(url, {"file": SimpleUploadedFile("p.csv", b"external_id,prompt,candidate\nx,,y\n")})
    good = researcher_client.post(url, {"file": SimpleUploadedFile("p.csv", POOLS_CSV.encode())}, follow=True)

    assert bad.status_code == 400
    assert "line 2: external_id &#x27;x&#x27; is not in the study" in bad.content.decode()
    assert "Imported 6 candidates for 2 new and 0 existing prompts" in good.content.decode()
    assert Candidate.objects.filter(prompt__study=study).count() == 6


def test_the_command_imports_a_file_and_refuses_a_bad_one(tmp_path, capsys):
    study = make_study(slug="byo")
    good, bad = tmp_path / "pools.csv", tmp_path / "bad.csv"
    good.write_text(POOLS_CSV)
    bad.write_text("external_id,prompt,candidate,count\ntea,Tea?,x,-1\n")

    call_command("import_candidates", "byo", str(good))
    with pytest.raises(CommandError, match="line 2: count must be"):
        call_command("import_candidates", "byo", str(bad))

    assert "Imported 6 candidates" in capsys.readouterr().out
    assert Candidate.objects.filter(prompt__study=study).count() == 6


def test_a_study_of_imported_candidates_prepares_without_a_generator_through_every_step():
    study = byo_study()
    assert services.preparation_problems(study) == []

    parent = services.prepare_study(study=study)
    for kind, task in [("generate", generate_candidates), ("populate", build_populations), ("fit", fit_policies),
                       ("build_items", build_items)]:
        task(parent.steps.get(kind=kind).pk)

    study.refresh_from_db()
    parent.refresh_from_db()
    assert study.status == Study.Status.READY, parent.error
    assert parent.steps.get(kind="generate").result["pools_imported"] == 2
    assert parent.steps.get(kind="generate").result["pools_generated"] == 0
    for prompt in study.prompts.all():
        assert sorted(prompt.population.candidate_ids) == sorted(prompt.candidates.filter(
            is_attention_check=False).values_list("pk", flat=True))
    assert PolicyFit.objects.filter(prompt__study=study).count() == 2 * 3 * 2
    items = ComparisonItem.objects.filter(study=study)
    assert items.filter(is_attention_check=False).count() == 2 * 3 * 2 * 3  # prompts × policies × k × opponents
    assert items.filter(is_attention_check=True).exists()
    shown = Candidate.objects.filter(shown_in__item__study=study, is_attention_check=False).distinct()
    assert shown.exists()
    assert not shown.filter(generator__isnull=False).exists()
    assert Job.objects.get(pk=parent.pk).status == Job.Status.DONE


def test_prepare_says_which_prompts_lack_imported_candidates_and_refuses_a_mixed_pool():
    study = byo_study()
    make_prompt(study=study, external_id="late", text="A prompt added after the import.")

    problems = services.preparation_problems(study)
    assert "Import candidates for every prompt, or choose a generator: these have none: late." in problems

    study.prompts.filter(external_id="late").delete()
    study.generator = make_generator()
    study.save()
    assert any("clear the generator to prepare from the imported candidates" in p
               for p in services.preparation_problems(study))
