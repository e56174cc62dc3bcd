"""Uploaded utilities name candidates by their database id (studies.steps.preference_sources, the CSV kind, the admin form)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from studies import services
from studies.admin.study import PreferenceSourceForm
from studies.estimate import export
from studies.models import Candidate, PopulationMatrix, PreferenceSource
from studies.steps import StepError, population
from studies.steps.preference_sources import csv_problems, csv_utilities
from tests.factories import (
    make_candidate,
    make_generator,
    make_policy,
    make_prompt,
    make_study,
)

pytestmark = pytest.mark.django_db


def _study(n_prompts=2, n_candidates=3):
    """A study whose candidates were created out of sample order, so ids, positions and indices differ."""
    generator = make_generator()
    study = make_study(generator=generator, pool_size=n_candidates)
    make_policy(study=study, kind="sample")
    prompts = [make_prompt(study=study, external_id=f"p{i}") for i in range(n_prompts)]
    for prompt in prompts:
        for index in reversed(range(n_candidates)):
            make_candidate(prompt=prompt, generator=generator, sample_index=index)
    return study, prompts


def _rows(study, utility) -> str:
    """type,candidate_id,utility for every population candidate, utility(type, candidate) given."""
    lines = ["type,candidate_id,utility"]
    for candidate in Candidate.objects.filter(prompt__study=study, is_attention_check=False).order_by("-id"):
        lines += [f"{t},{candidate.pk},{utility(t, candidate)}" for t in ("fan", "critic")]
    return "\n".join(lines) + "\n"


def _by_id(prompt) -> dict[int, list[float]]:
    matrix = PopulationMatrix.objects.get(prompt=prompt)
    u = population.utilities_from_bytes(matrix.utilities)
    return {pk: list(u[:, j]) for j, pk in enumerate(matrix.candidate_ids)}


def test_each_utility_reaches_the_candidate_its_row_names_by_id():
    study, prompts = _study()
    data = _rows(study, lambda t, c: c.pk if t == "fan" else -c.sample_index)
    source = PreferenceSource.objects.create(study=study, kind="csv", data=data)

    for prompt in prompts:
        population.build_population(prompt, [source])

    for prompt in prompts:
        by_id = _by_id(prompt)
        assert by_id == {c.pk: [c.pk, -c.sample_index] for c in prompt.candidates.all()}
        assert PopulationMatrix.objects.get(prompt=prompt).type_labels == [f"csv-{source.pk}: fan",
                                                                           f"csv-{source.pk}: critic"]


def test_the_candidates_export_plus_type_and_utility_columns_uploads_as_it_is():
    study, prompts = _study()
    exported = list(csv.DictReader(io.StringIO("".join(export.iter_csv(study, "candidates")))))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["type", *exported[0].keys(), "utility"])
    writer.writeheader()
    for row in exported:
        writer.writerow({"type": "reader", **row, "utility": len(row["text"]) + int(row["sample_index"])})

    assert csv_problems(study, out.getvalue()) == []
    resolved = csv_utilities(study, out.getvalue())
    for prompt in prompts:
        columns = resolved.columns[prompt.pk]
        expected = [len(c.text) + c.sample_index for c in (Candidate.objects.get(pk=pk) for pk in columns)]
        np.testing.assert_array_equal(resolved.for_prompt(prompt.pk).utilities, [expected])


def test_a_row_whose_checking_cells_disagree_with_its_candidate_is_refused():
    study, (p0, p1) = _study()
    a, b = p0.candidates.order_by("id")[:2]
    lines = ["type,candidate_id,utility,prompt_id,text_sha256"]
    for candidate in Candidate.objects.filter(prompt__study=study):
        for t in ("fan", "critic"):
            prompt_id, sha = candidate.prompt_id, candidate.text_sha256
            if candidate == a and t == "fan":
                prompt_id, sha = p1.pk, b.text_sha256
            lines.append(f"{t},{candidate.pk},1,{prompt_id},{sha}")
    problems = csv_problems(study, "\n".join(lines))
    assert len(problems) == 1
    assert problems[0].startswith(f"line {lines.index(f'fan,{a.pk},1,{p1.pk},{b.text_sha256}') + 1}: ")
    assert f"prompt_id '{p1.pk}', text_sha256" in problems[0]
    assert f"does not match candidate {a.pk} (of prompt 'p0')" in problems[0]


def test_ids_of_another_study_attention_checks_and_unknown_ids_are_refused_with_their_lines():
    study, (prompt, _) = _study()
    other, _ = _study()
    foreign = Candidate.objects.filter(prompt__study=other).first()
    check = make_candidate(prompt=prompt, generator=None, sample_index=-1, text="Tea sideways the", is_attention_check=True)
    data = _rows(study, lambda t, c: 0) + f"fan,{foreign.pk},1\nfan,{check.pk},1\nfan,999999,1\nfan,{foreign.pk},2\n"
    first = len(data.splitlines()) - 3

    problems = csv_problems(study, data)

    assert problems == [
        f"line {first}: candidate {foreign.pk} belongs to another study",
        f"line {first + 1}: candidate {check.pk} is an attention check, in no population: leave it out",
        f"line {first + 2}: no candidate has id 999999",
        f"line {first + 3}: type 'fan' candidate {foreign.pk} repeats line {first}",
    ]


def test_every_prompt_with_candidates_must_be_scored_by_every_type_on_all_its_candidates():
    study, (p0, p1) = _study()
    c0 = p0.candidates.order_by("id").first()
    data = "".join(
        line + "\n" for line in _rows(study, lambda t, c: 1).splitlines()
        if not line.endswith(tuple(f",{c.pk},1" for c in p1.candidates.all())) and line != f"critic,{c0.pk},1"
    )

    problems = csv_problems(study, data)

    assert len(problems) == 2
    ids = ", ".join(str(pk) for pk in sorted(p1.candidates.values_list("pk", flat=True)))
    assert problems[0] == f"line 1: no utility rows for prompt 'p1' (candidates {ids})"
    assert f"type 'critic' has no utility for candidate(s) {c0.pk} of prompt 'p0'" in problems[1]


def test_a_bad_file_at_the_populations_step_saves_no_prompts_population():
    study, prompts = _study()
    data = _rows(study, lambda t, c: "inf" if c.prompt_id == prompts[1].pk and t == "critic" else 1)
    source = PreferenceSource.objects.create(study=study, kind="csv", data=data)

    for prompt in prompts:
        with pytest.raises(StepError, match="utility 'inf' is not a finite number"):
            population.build_population(prompt, [source])
    assert not PopulationMatrix.objects.filter(prompt__study=study).exists()


def test_an_empty_csv_source_waits_for_the_candidates_then_asks_for_the_file():
    study = make_study(generator=make_generator())
    make_policy(study=study, kind="sample")
    prompt = make_prompt(study=study)
    PreferenceSource.objects.create(study=study, kind="csv", data="")
    assert csv_problems(study, "") == []
    assert services.preparation_problems(study) == []  # Prepare may run: it generates the candidates first

    make_candidate(prompt=prompt, generator=study.generator, sample_index=0)

    [problem] = csv_problems(study, "")
    assert reverse("studies:export", args=[study.slug, "candidates"]) in problem
    assert f"manage.py export_study {study.slug} --table candidates" in problem
    assert any("No utilities uploaded yet" in p for p in services.preparation_problems(study))
    with pytest.raises(StepError, match="No utilities uploaded yet"):
        population.build_population(prompt, list(study.preference_sources.all()))


def test_the_old_position_format_is_refused_with_an_explanation():
    study, _ = _study()
    [problem] = csv_problems(study, "type,candidate,utility\na,0,1\n")
    assert problem.startswith("line 1: the candidate column is now candidate_id")


# -- the admin -------------------------------------------------------------------------------------------


def test_the_source_form_shows_row_errors_with_line_numbers_and_saves_nothing(researcher_client):
    study, _ = _study()
    data = _rows(study, lambda t, c: 1) + "fan,424242,1\n"
    response = researcher_client.post(
        reverse("admin:studies_preferencesource_add"),
        {"study": study.pk, "kind": "csv", "weight": "1", "params": "{}", "data": data},
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert f"line {len(data.splitlines())}: no candidate has id 424242" in page
    assert not study.preference_sources.exists()


def test_the_source_form_takes_an_uploaded_file_into_the_data(researcher_client):
    study, prompts = _study()
    data = _rows(study, lambda t, c: c.sample_index)
    upload = SimpleUploadedFile("utilities.csv", ("\ufeff" + data).encode(), content_type="text/csv")
    response = researcher_client.post(
        reverse("admin:studies_preferencesource_add"),
        {"study": study.pk, "kind": "csv", "weight": "1", "params": "{}", "data": "", "data_file": upload},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    source = study.preference_sources.get()
    assert source.data == data
    bad = SimpleUploadedFile("utilities.csv", b"\xff\xfe\x00t", content_type="text/csv")
    response = researcher_client.post(
        reverse("admin:studies_preferencesource_change", args=[source.pk]),
        {"study": study.pk, "kind": "csv", "weight": "1", "params": "{}", "data": data, "data_file": bad},
    )
    assert "not UTF-8" in response.content.decode()


def test_the_inline_source_form_checks_rows_against_its_study():
    study, prompts = _study()
    other, _ = _study()
    data = _rows(other, lambda t, c: 1)  # another study's ids
    form = PreferenceSourceForm(
        data={"kind": "csv", "weight": "1", "params": "{}", "data": data},
        instance=PreferenceSource(study=study),
    )
    assert not form.is_valid()
    assert "belongs to another study" in " ".join(form.errors["data"])
    form = PreferenceSourceForm(
        data={"kind": "csv", "weight": "1", "params": "{}", "data": _rows(study, lambda t, c: 1)},
        instance=PreferenceSource(study=study),
    )
    assert form.is_valid(), form.errors


def test_the_candidate_list_shows_the_id_a_csv_names_candidates_by(researcher_client):
    study, (prompt, _) = _study()
    page = researcher_client.get(reverse("admin:studies_candidate_changelist")).content.decode()
    assert "candidate_id" in page
    for candidate in prompt.candidates.all():
        change = reverse("admin:studies_candidate_change", args=[candidate.pk])
        assert f'<a href="{change}">{candidate.pk}</a>' in page


def test_the_study_page_can_upload_a_source_file_inline(researcher_client):
    study, _ = _study()
    page = researcher_client.get(reverse("admin:studies_study_change", args=[study.pk])).content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert "preference_sources-__prefix__-data_file" in page


@pytest.mark.parametrize(("cell", "message"), [
    ("x" * 200_000, "malformed CSV (field larger than field limit"),  # past csv's own limit
    ("x" * 5_000, "a cell is longer than 1000 characters"),
])
def test_an_over_long_field_in_an_uploaded_utilities_csv_gets_a_line_error_not_a_500(researcher_client, cell, message):
    study, _ = _study()
    data = _rows(study, lambda t, c: 1) + f"{cell},1,1\n"
    upload = SimpleUploadedFile("utilities.csv", data.encode(), content_type="text/csv")
    response = researcher_client.post(
        reverse("admin:studies_preferencesource_add"),
        {"study": study.pk, "kind": "csv", "weight": "1", "params": "{}", "data": "", "data_file": upload},
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert f"line {len(data.splitlines())}: {message}" in page
    assert cell not in page
    assert not study.preference_sources.exists()


@pytest.mark.parametrize(("junk", "message"), [("\x00", "NUL character"), ("\x1b", "control character U+001B")])
def test_nul_or_control_characters_in_an_uploaded_utilities_csv_are_refused(researcher_client, junk, message):
    study, _ = _study()
    data = _rows(study, lambda t, c: 1).replace("critic", f"crit{junk}ic", 1)
    upload = SimpleUploadedFile("utilities.csv", data.encode(), content_type="text/csv")
    response = researcher_client.post(
        reverse("admin:studies_preferencesource_add"),
        {"study": study.pk, "kind": "csv", "weight": "1", "params": "{}", "data": "", "data_file": upload},
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not study.preference_sources.exists()
