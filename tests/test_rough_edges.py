"""Issue 12's rough edges, each fixed: the landing page, the jobs page's states and summaries, prompt
texts in the admin list, no-store task pages, the "Why?" box before the pick buttons, the consent
page's time estimate, the demo's terminal progress and a clear refusal of a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from studies import demo
from studies.duration import DEFAULT_SECONDS_PER_ITEM, SETUP_SECONDS, estimated_duration
from studies.models import Job, Study
from tests.annotator import join, start, url
from tests.conftest import ROOT
from tests.factories import make_live_study, make_participant, make_prompt, make_study
from tests.judgments import make_judgment

pytestmark = pytest.mark.django_db


def test_the_front_page_says_what_ualign_is_and_the_admins_view_site_goes_there(client, researcher_client):
    anonymous = client.get("/")
    admin_index = researcher_client.get(reverse("admin:index")).content.decode()
    staff = researcher_client.get("/").content.decode()

    assert anonymous.status_code == 200
    assert "human preference studies" in anonymous.content.decode()
    assert f'href="{reverse("admin:index")}"' in anonymous.content.decode()
    assert 'href="/">View site' in admin_index
    assert f'href="{reverse("admin:studies_study_changelist")}"' in staff


def chain_with(study: Study, states: list[tuple[str, str, dict, str]]) -> Job:
    """A Prepare chain whose steps have (kind, status, result, progress message)."""
    parent = Job.objects.create(study=study, kind=Job.Kind.PREPARE)
    for i, (kind, status, result, message) in enumerate(states):
        Job.objects.create(study=study, parent=parent, kind=kind, status=status, result=result,
                           progress=1.0 if status == "done" else 0.4, progress_message=message,
                           params={"step": i, "steps": len(states)})
    return parent


GENERATED = {"pools_generated": 5, "pools_skipped": 0, "tokens": 2240, "seconds": 32.0, "tokens_per_second": 70.0}


def test_the_jobs_page_shows_the_chain_as_its_running_step_and_finished_steps_as_summaries(researcher_client):
    study = make_study(status=Study.Status.PREPARING)
    chain_with(study, [
        ("generate", "done", GENERATED, "Generating with demo: prompt 5 of 5"),
        ("populate", "running", {}, "Population for prompt 3 of 5"),
        ("fit", "queued", {}, ""),
        ("build_items", "queued", {}, ""),
    ])

    page = researcher_client.get(reverse("admin:studies_study_jobs", args=[study.pk])).content.decode()

    chain_row = page[page.index('class="job-queued job-chain"'):]
    chain_row = chain_row[:chain_row.index("</tr>")]
    assert "Running: Build populations" in chain_row
    assert "Population for prompt 3 of 5" in chain_row
    assert "Queued" not in chain_row
    assert "5 pools sampled, 2,240 tokens at 70.0 tokens/s" in page
    assert "prompt 5 of 5" not in page


def test_a_finished_chain_summarises_each_step(researcher_client):
    study = make_study(status=Study.Status.READY)
    parent = chain_with(study, [
        ("generate", "done", GENERATED, "prompt 5 of 5"),
        ("populate", "done", {"prompts": 5, "types": 5, "sources": ["persona_judge"]}, "prompt 5 of 5"),
        ("fit", "done", {"fits": 75, "not_converged": []}, "prompt 5 of 5"),
        ("build_items", "done", {"items": 150, "decided_items": 12, "attention_checks": 15}, "prompt 5 of 5"),
    ])
    Job.objects.filter(pk=parent.pk).update(status=Job.Status.DONE, progress=1)

    page = researcher_client.get(reverse("admin:studies_study_jobs", args=[study.pk]),
                                 headers={"HX-Request": "true"}).content.decode()

    for summary in ["5 prompts, 5 types per prompt (persona_judge)", "75 policy fits",
                    "150 items (12 decided by construction), 15 attention checks", "The study is ready."]:
        assert summary in page
    assert "prompt 5 of 5" not in page


def test_the_prompt_list_shows_the_prompt_text(researcher_client):
    study = make_study()
    make_prompt(study=study, external_id="q1", text="Explain how   rainbows form.\nFor a child.")

    page = researcher_client.get(reverse("admin:studies_prompt_changelist")).content.decode()

    assert "Explain how rainbows form. For a child." in page


def test_task_and_step_pages_are_never_stored_by_the_browser(client):
    study = make_live_study()
    join(client, study)
    consent = client.get(url("consent", study))
    client.post(url("consent", study), {"decision": "accept"})
    client.post(url("instructions", study))
    task = client.get(url("task", study))

    for response in (consent, task):
        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"]


def test_the_why_box_comes_before_the_pick_buttons(client):
    study = make_live_study()
    start(client, study)

    page = client.get(url("task", study)).content.decode()

    assert page.index('id="id_rationale"') < page.index('name="choice"')
    assert page.index("Response 2</h2>") < page.index('id="id_rationale"')
    assert page.count('class="button pick"') == 2


def test_the_consent_page_estimates_the_time_from_items_per_participant(client):
    study = make_live_study(n_items=3, items_per_participant=12)
    join(client, study)

    page = client.get(url("consent", study)).content.decode()

    minutes = -(-(12 * DEFAULT_SECONDS_PER_ITEM + SETUP_SECONDS) // 60)
    assert f"about <strong>{int(minutes)} minutes</strong>" in page
    assert "up to 12 comparisons" in page


def test_the_estimate_uses_the_median_time_on_task_once_people_have_judged(client):
    study = make_live_study(n_items=3, annotations_per_item=30, items_per_participant=10)
    item = study.items.first()
    for i in range(25):
        make_judgment(item=item, participant=make_participant(study=study), pick=0, latency_ms=(i + 1) * 12_000)

    duration = estimated_duration(study)

    assert duration.measured
    assert duration.seconds_per_item == 13 * 12  # the median of 12 s … 300 s
    assert duration.minutes == -(-(10 * 156 + SETUP_SECONDS) // 60)


def test_the_demo_prints_each_step_of_its_preparation():
    study = make_study()
    chain_with(study, [
        ("generate", "done", GENERATED, ""),
        ("populate", "running", {}, "Population for prompt 2 of 5"),
        ("fit", "queued", {}, ""),
    ])

    lines = demo.progress_lines(study)

    assert lines == [
        "  [1/3] Generate candidates: done, 5 pools sampled, 2,240 tokens at 70.0 tokens/s",
        "  [2/3] Build populations: Population for prompt 2 of 5 (40%)",
    ]


def test_a_busy_port_is_refused_with_a_clear_message_before_anything_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(CommandError, match=rf"(?s)Can't serve on 127.0.0.1:{port}.*--addr 127.0.0.1:{port + 1}"):
            call_command("serve", "--demo", "--addr", f"127.0.0.1:{port}")
        run = subprocess.run([sys.executable, "manage.py", "serve", "--demo", "--addr", f"127.0.0.1:{port}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)

    assert run.returncode != 0
    assert f"Can't serve on 127.0.0.1:{port}" in run.stderr
    assert "live" not in run.stdout + run.stderr
    assert not Study.objects.filter(slug="demo").exists()  # refused before the demo was set up
