"""Issue #24 finding 10, the smaller ones: JSONL lines end at \\n only (U+2028 and U+2029 are text
inside a JSON string), and more below."""

from __future__ import annotations

import json

import pytest

from studies.candidate_import import import_candidates
from studies.importing import import_prompts
from studies.models import Candidate, Prompt
from tests.factories import admin_study_form, make_study

# A line separator and a paragraph separator inside JSON strings: valid JSON, and valid JSONL,
# since JSONL ends its lines at \n only (https://jsonlines.org). str.splitlines() splits on both.
SEPARATED = "First line\u2028second line\u2029third"


@pytest.mark.django_db
def test_jsonl_prompts_may_hold_u2028_inside_a_string():
    study = make_study()
    data = "\n".join(json.dumps({"text": t, "external_id": f"p{i}"}, ensure_ascii=False)
                     for i, t in enumerate([SEPARATED, "plain"])).encode()
    report = import_prompts(study=study, filename="p.jsonl", data=data)
    assert report.ok, report.errors
    assert sorted(Prompt.objects.filter(study=study).values_list("text", flat=True)) == sorted([SEPARATED, "plain"])


@pytest.mark.django_db
def test_jsonl_candidates_may_hold_u2028_inside_a_string():
    study = make_study()
    line = {"external_id": "tea", "prompt": "How?", "candidates": [SEPARATED, "Steep it."]}
    data = (json.dumps(line, ensure_ascii=False) + "\r\n").encode()
    report = import_candidates(study=study, filename="c.jsonl", data=data)
    assert report.ok, report.errors
    assert set(Candidate.objects.filter(prompt__study=study).values_list("text", flat=True)) == {SEPARATED, "Steep it."}


# --- Completion URLs: http and https only ---------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["ftp://files.example.org/done", "ftps://files.example.org/done",
                                 "javascript:alert(1)", "file:///etc/passwd"])
def test_a_completion_url_other_than_http_or_https_is_refused(rf, researcher, url):
    from django.core.exceptions import ValidationError

    study = make_study()
    study.completion_redirect_url = url
    with pytest.raises(ValidationError) as refused:
        study.full_clean()
    assert "completion_redirect_url" in refused.value.message_dict
    form = admin_study_form(rf, researcher, make_study(), completion_redirect_url=url)
    assert not form.is_valid()
    assert "completion_redirect_url" in form.errors


@pytest.mark.django_db
def test_an_https_completion_url_is_accepted(rf, researcher):
    form = admin_study_form(rf, researcher, make_study(),
                            completion_redirect_url="https://app.prolific.com/submissions/complete?cc=ABC")
    assert form.is_valid(), form.errors


# --- The pairs import follows the design-fixed rule -----------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["live", "ready", "paused", "closed"])
def test_the_pairs_import_is_refused_once_the_design_is_fixed(researcher_client, status):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    from studies.models import PreferencePair
    from studies.steps.doctor import import_pairs_csv

    study = make_study(status=status)
    report = import_pairs_csv(study, b"prompt,chosen,rejected\nq,a,b\n")
    assert not report.ok
    assert "design is fixed" in " ".join(report.errors)
    url = reverse("admin:studies_study_import_pairs", args=[study.pk])
    response = researcher_client.post(url, {"file": SimpleUploadedFile("p.csv", b"prompt,chosen,rejected\nq,a,b\n")})
    assert response.status_code == 409
    assert "design is fixed" in response.content.decode()
    assert not PreferencePair.objects.exists()


@pytest.mark.django_db
def test_the_pairs_import_still_works_on_a_draft(researcher_client):
    from studies.models import PreferencePair
    from studies.steps.doctor import import_pairs_csv

    study = make_study()
    assert import_pairs_csv(study, b"prompt,chosen,rejected\nq,a,b\n").created == 1
    assert PreferencePair.objects.filter(study=study, pair_set="csv").count() == 1


# --- Model files stay inside the model folders ----------------------------------------------


@pytest.fixture
def model_roots(tmp_path, monkeypatch):
    """A model cache and one listed model folder under tmp_path; pytest's temp root not allowed."""
    cache, mine = tmp_path / "cache", tmp_path / "mine"
    (mine / "m").mkdir(parents=True)
    (mine / "m" / "weights.gguf").write_bytes(b"GGUF")
    cache.mkdir()
    monkeypatch.setenv("UALIGN_MODEL_CACHE", str(cache))
    monkeypatch.setenv("UALIGN_DOCTOR_DIR", str(tmp_path / "doctors"))
    monkeypatch.setenv("UALIGN_MODEL_DIRS", str(mine))
    return mine


@pytest.mark.parametrize(("ref", "gguf_file", "field"), [
    ("../../../../etc", "passwd", "ref"),
    ("models/../../etc", None, "ref"),
    ("/etc", None, "ref"),
    ("~", None, "ref"),
    ("TheBloke/some-model-GGUF", "../../../../etc/passwd", "gguf_file"),
    ("TheBloke/some-model-GGUF", "/etc/passwd", "gguf_file"),
])
def test_a_model_path_outside_the_model_folders_is_refused(model_roots, ref, gguf_file, field):
    from workers.generation import load_model
    from workers.generation.loading import model_location_problem

    problem = model_location_problem(ref, gguf_file)
    assert problem is not None
    assert problem.startswith(field)
    with pytest.raises(ValueError, match=f"^{field}"):
        load_model(ref, gguf_file=gguf_file)  # refused before anything is opened


def test_a_symlink_out_of_an_allowed_folder_is_refused(model_roots):
    from workers.generation.loading import model_location_problem

    (model_roots / "escape").symlink_to("/etc")
    assert model_location_problem(str(model_roots / "escape")) is not None
    assert model_location_problem(str(model_roots / "m"), "weights.gguf") is None
    (model_roots / "m" / "link.gguf").symlink_to("/etc/hostname")
    assert model_location_problem(str(model_roots / "m"), "link.gguf") is not None


def test_hub_ids_and_demo_refs_need_no_folder(model_roots):
    from workers.generation.loading import model_location_problem

    assert model_location_problem("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    assert model_location_problem("TheBloke/some-model-GGUF", "sub/model.Q4_K_M.gguf") is None


@pytest.mark.django_db
def test_the_generator_form_refuses_a_path_outside_the_model_folders(model_roots):
    from django.core.exceptions import ValidationError

    from studies.models import GeneratorModel

    generator = GeneratorModel(name="evil", model_ref="../../../../etc", gguf_file="passwd")
    with pytest.raises(ValidationError) as refused:
        generator.full_clean()
    assert "model_ref" in refused.value.message_dict
    GeneratorModel(name="fine", model_ref=str(model_roots / "m"), gguf_file="weights.gguf").full_clean()


# --- /readyz gives up on the database after UALIGN_READY_TIMEOUT ----------------------------

@pytest.mark.django_db
def test_readyz_gives_up_on_a_hung_database_after_the_ready_timeout(monkeypatch, settings, silent_port):
    """A database that accepts the connection and never answers: the probe connects with
    UALIGN_READY_TIMEOUT (2 s, libpq's least) as libpq's connect_timeout, not the pages' (30 s
    here). The spy reads the timeout libpq is given, rather than timing the probe."""
    from django.db import connection
    from django.db.utils import load_backend

    from ualign_web import health

    hung = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": str(silent_port),
            "OPTIONS": {**connection.settings_dict.get("OPTIONS", {}), "connect_timeout": 30}}
    wrapper = load_backend(hung["ENGINE"]).DatabaseWrapper(hung, alias="hung")
    monkeypatch.setattr(health, "connection", wrapper)
    settings.UALIGN_READY_TIMEOUT = 2
    given: list[object] = []
    connect = wrapper.get_new_connection

    def spy(conn_params):
        given.append(conn_params.get("connect_timeout"))
        return connect(conn_params)

    monkeypatch.setattr(wrapper, "get_new_connection", spy)
    assert health.database_problem() == "database unavailable"
    assert given == [2]  # libpq gives up after 2 s; with the pages' setting it would wait 30
    assert wrapper.settings_dict["OPTIONS"]["connect_timeout"] == 30  # the pages' setting is untouched
