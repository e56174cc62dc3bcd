"""The README's main command: `manage.py serve --demo` on embedded defaults, and the demo study's setup."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.test import override_settings

from studies import demo, services
from studies.models import Job, Policy, PreferenceSource, Study
from tests.factories import make_item

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_the_demo_study_is_created_once_with_its_design():
    first = demo.ensure_demo_study()
    again = demo.ensure_demo_study()

    assert again.pk == first.pk
    assert Study.objects.count() == 1
    assert first.prompts.count() == len(demo.PROMPTS) == 12
    assert first.k_values == [1, 2, 4, 8]
    assert (first.pool_size, first.replicates, first.annotations_per_item) == (8, 4, 2)
    assert first.held_out_fraction == 0  # fits on the whole pool of 8: nothing held out, no best text lost
    assert first.generator.model_ref == "smollm2-135m-instruct"
    assert first.generator.decoding["system_prompt"] == demo.SYSTEM_PROMPT
    assert sorted(first.policies.values_list("kind", flat=True)) == sorted(
        [Policy.Kind.SAMPLE, Policy.Kind.NLHF, Policy.Kind.MULTIPLAYER]
    )


@pytest.mark.django_db
def test_the_demos_population_is_a_bare_majority_judged_by_smollm2_and_two_minorities():
    """theory.md §7: a majority of 0.52 shares a favourite, two minorities of 0.24 each differ."""
    study = demo.ensure_demo_study()
    judge, embedding = study.preference_sources.order_by("id")

    assert judge.kind == PreferenceSource.Kind.PERSONA_JUDGE
    assert judge.params["personas"] == [demo.MAJORITY[1]]
    assert judge.params.get("model", demo.DEMO_MODEL) == demo.demo_model()  # SmolLM2 unless swapped
    assert embedding.kind == PreferenceSource.Kind.EMBEDDING
    assert embedding.params["labels"] == ["child", "poet"]
    assert judge.weight == pytest.approx(0.52)
    assert embedding.weight == pytest.approx(0.48)
    assert not services.preparation_problems(study)


@pytest.mark.django_db
def test_the_demo_is_prepared_when_draft_and_made_live_when_ready(django_capture_on_commit_callbacks):
    study = demo.ensure_demo_study()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert "Preparing" in demo.advance(study)
    study.refresh_from_db()
    assert study.status == Study.Status.PREPARING
    assert len(callbacks) == 1
    assert demo.advance(study) == ""  # still preparing: nothing to do

    Study.objects.filter(pk=study.pk).update(status=Study.Status.READY)
    make_item(study=study, prompt=study.prompts.first(), policy=study.policies.first(), texts=["a", "b"],
              counts=[(1, 0), (0, 1)], k=1)  # going live needs items to judge
    assert "live" in demo.advance(study)
    assert study.status == Study.Status.LIVE


@pytest.mark.django_db
def test_a_failed_demo_preparation_is_not_retried_in_a_loop(django_capture_on_commit_callbacks):
    study = demo.ensure_demo_study()
    Job.objects.create(study=study, kind=Job.Kind.PREPARE, status=Job.Status.FAILED, error="Generate failed. boom")

    assert demo.advance(study) == ""
    assert demo.failure(study) == "Generate failed. boom"
    with django_capture_on_commit_callbacks(execute=False):
        assert "Preparing" in demo.resume(study)  # a restart retries


@pytest.mark.django_db
@override_settings(SITE_URL="http://example.test:8000")
def test_the_links_point_at_the_site_url():
    study = demo.ensure_demo_study()
    links = demo.links(study)
    assert links.annotator == f"http://example.test:8000/s/demo/?invite={study.invite_token}"
    assert links.admin == "http://example.test:8000/admin/"
    assert links.results == "http://example.test:8000/research/demo/results/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_demo_runs_the_whole_demo_on_sqlite_and_ctrl_c_stops_everything(tmp_path):
    """Once, on embedded defaults: SQLite, the filesystem broker, a tiny model instead of SmolLM2."""
    from tests.tinymodels import tiny_model_dir

    model = tiny_model_dir(tmp_path / "tiny-chat")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SITE_URL")}
    env.update(UALIGN_VAR_DIR=str(tmp_path / "var"), UALIGN_DEMO_MODEL=str(model), PYTHONUNBUFFERED="1",
               UALIGN_MODEL_CACHE=str(tmp_path / "models"), LOG_LEVEL="WARNING")
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--demo", "--addr", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any("The demo study is live." in line for line in lines):
            assert serve.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines[-40:])
            time.sleep(0.5)
        time.sleep(1)
        output = "".join(lines)
        assert f"Annotate: http://127.0.0.1:{port}/s/demo/?invite=" in output
        assert f"Results:  http://127.0.0.1:{port}/research/demo/results/" in output
        assert "login admin / " in output

        simulated = subprocess.run(
            [sys.executable, "manage.py", "simulate_annotators", "demo", "-n", "2"],
            cwd=ROOT, env={**env, "SITE_URL": f"http://127.0.0.1:{port}"}, capture_output=True, text=True, timeout=120,
        )
        assert simulated.returncode == 0, simulated.stdout + simulated.stderr
        assert "2 simulated annotators (2 completed) made 24 judgments" in simulated.stdout
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole foreground group
        try:
            serve.wait(timeout=60)
        finally:
            deadline = time.monotonic() + 30
            while _group_alive(serve.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            alive = _group_alive(serve.pid)
            if alive:
                os.killpg(serve.pid, signal.SIGKILL)
            # The reader thread may not have read the last lines yet (a busy machine): it ends at the
            # pipe's end of file, once every process of the group has exited.
            reader.join(timeout=30)
    assert "Stopping" in "".join(lines), "".join(lines[-20:])
    assert not alive, "the web server, the worker or beat outlived Ctrl-C"
    assert list((tmp_path / "var").glob("celerybeat-schedule*")), "beat ran, its schedule file under var/"


@pytest.mark.django_db
def test_the_demo_adds_an_llmdoctor_policy_only_when_asked(monkeypatch):
    from studies.services import preparation_problems

    assert not demo.ensure_demo_study().policies.filter(kind=Policy.Kind.DOCTOR).exists()
    Study.objects.all().delete()
    monkeypatch.setenv("UALIGN_DEMO_DOCTOR", "1")
    study = demo.ensure_demo_study()
    doctor = study.policies.get(kind=Policy.Kind.DOCTOR)
    assert doctor.params == demo.DEMO_DOCTOR_PARAMS
    assert preparation_problems(study) == []
