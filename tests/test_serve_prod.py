"""`scripts/serve-prod` (= `make serve-prod`) serves the annotator's pages as in production.

The real command, with DEBUG off, PostgreSQL, Redis and a free port: it checks the deployment,
migrates, collects the static files and runs gunicorn, a Celery worker and Celery beat. The
test reaches it as a TLS-terminating proxy would (X-Forwarded-Proto: https), loads a task page
with its CSS and JS, checks the security headers, picks once, and stops it with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from studies.models import Judgment
from tests.prodserver import (
    ROOT,
    ProxiedBrowser,
    annotation_study,
    assignment_on,
    free_port,
    kill_group,
    plain_get,
    production_env,
    wait_for_health,
    walk_to_first_task,
)

pytestmark = pytest.mark.django_db(transaction=True)

ASSETS = re.compile(r'<(?:link rel="stylesheet" href|script src)="([^"]+)"')


@pytest.fixture
def serve_prod(tmp_path):
    port = free_port()
    env = production_env(static_root=tmp_path / "static", var_dir=tmp_path / "var", port=port)
    log_path = tmp_path / "serve-prod.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(["scripts/serve-prod"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", 180, process, log_path)
        _wait_for_log(log_path, [" ready.", "beat: Starting"], process)
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        if process.poll() is None:
            kill_group(process)


def _wait_for_log(log_path, needles: list[str], process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if all(n in text for n in needles):
            return
        assert process.poll() is None, text[-4000:]
        time.sleep(0.2)
    raise AssertionError(f"not all of {needles} in the log:\n{log_path.read_text(errors='replace')[-4000:]}")


def test_serve_prod_serves_a_task_page_with_its_static_files_and_stops_cleanly(serve_prod):
    study = annotation_study(participants=1, items_per_participant=2)
    process, base_url, log_path = serve_prod
    browser = ProxiedBrowser(base_url)

    task = walk_to_first_task(browser, study)
    assert task.status == 200
    assignment = assignment_on(task)
    assert assignment is not None

    # Security headers on the task page.
    status, headers, _ = browser.raw(f"/s/{study.slug}/task/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert headers["X-Content-Type-Options"] == "nosniff"
    # The participant is bound to this browser by a signed cookie: Secure and HttpOnly here.
    participant_cookie = next(c for c in browser.jar if c.name == f"ualign_p{study.pk}")
    assert participant_cookie.secure
    assert participant_cookie.has_nonstandard_attr("HttpOnly")

    # Its CSS and JS: collected, hashed names, served by WhiteNoise with long cache lifetimes.
    assets = ASSETS.findall(task.html)
    kinds = {"css": "text/css", "js": "text/javascript"}
    assert {a.rsplit(".", 1)[1] for a in assets} == {"css", "js"}
    assert any("annotate." in a for a in assets)
    assert any("htmx-2.min." in a for a in assets)
    for asset in assets:
        assert re.search(r"\.[0-9a-f]{12}\.(css|js)$", asset), asset
        status, headers, body = browser.raw(asset)
        assert status == 200, asset
        assert headers["Content-Type"].split(";")[0] == kinds[asset.rsplit(".", 1)[1]], asset
        assert "max-age=315360000" in headers["Cache-Control"], asset
        assert body

    # A pick is saved and the next task comes back.
    page = browser.post(f"/s/{study.slug}/judgments/", {"assignment": str(assignment), "choice": "1"}, task)
    assert page.status == 200
    assert assignment_on(page) not in (None, assignment)
    assert Judgment.objects.filter(assignment_id=assignment, chosen_slot=1).count() == 1

    # Plain HTTP is sent to HTTPS; the probes answer a load balancer by IP, over plain HTTP.
    status, headers, _ = plain_get(f"{base_url}/s/{study.slug}/task/")
    assert status == 301
    assert headers["Location"].startswith("https://")
    assert plain_get(f"{base_url}/healthz", headers={"Host": "10.1.2.3:8000"})[0] == 200
    status, _, body = plain_get(f"{base_url}/readyz", headers={"Host": "10.1.2.3:8000"})
    assert (status, body) == (200, b"ready\n")

    # SIGTERM (what systemd or a container runtime sends) stops all three, and the script exits 0.
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log_path.read_text(errors="replace")[-4000:]
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing left in its process group
    assert "serve-prod: stopped" in log_path.read_text()


def _nice_and_parent(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # from the state, field 3
    return int(fields[16]), int(fields[1])


def _children(pid: int) -> list[int]:
    children = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                if _nice_and_parent(int(stat))[1] == pid:
                    children.append(int(stat))
            except OSError:  # exited meanwhile
                continue
    return children


def test_with_pick_bind_the_picks_have_their_own_gunicorn_and_the_rest_runs_niced_below_it(tmp_path):
    """PICK_BIND (docs/deployment.md, "Picks first"): serve-prod starts a second gunicorn there for the
    proxy's pick route, at the normal priority, and the pages' gunicorn, the worker and beat at nice
    PICK_PRIORITY_NICE. The test posts the pick to that address as the proxy would route it (no nginx
    here: the route itself is nginx's, exercised by `make bench-load`)."""
    study = annotation_study(participants=1, items_per_participant=2)
    port, pick_port = free_port(), free_port()
    env = production_env(static_root=tmp_path / "static", var_dir=tmp_path / "var", port=port,
                         PICK_BIND=f"127.0.0.1:{pick_port}", PICK_CONCURRENCY="1", PICK_PRIORITY_NICE="7",
                         # The proxy gives both gunicorns the site's Host; here the pick comes to
                         # another port, so its Origin is trusted explicitly.
                         CSRF_TRUSTED_ORIGINS=f"https://127.0.0.1:{port}")  # fmt: skip
    log_path = tmp_path / "serve-prod.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(["scripts/serve-prod"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        wait_for_health(f"http://127.0.0.1:{port}", 180, process, log_path)
        wait_for_health(f"http://127.0.0.1:{pick_port}", 60, process, log_path)
        _wait_for_log(log_path, [" ready.", "beat: Starting"], process)
        started = re.search(r"picks on 127\.0\.0\.1:\d+ \(pids: picks' gunicorn (\d+), gunicorn (\d+), "
                            r"worker (\d+), beat (\d+)\)", log_path.read_text())  # fmt: skip
        assert started, log_path.read_text()[-4000:]
        picks, pages, worker, beat = (int(pid) for pid in started.groups())
        deadline = time.monotonic() + 30  # /healthz answered once one worker was up: wait for all
        while len(pick_workers := _children(picks)) < 1 or len(page_workers := _children(pages)) < 2:
            assert time.monotonic() < deadline, (pick_workers, page_workers)
            time.sleep(0.1)
        assert len(pick_workers) == 1
        assert len(page_workers) == 2
        assert {_nice_and_parent(pid)[0] for pid in [picks, *pick_workers]} == {0}
        assert {_nice_and_parent(pid)[0] for pid in [pages, *page_workers, worker, beat]} == {7}

        browser = ProxiedBrowser(f"http://127.0.0.1:{port}")
        task = walk_to_first_task(browser, study)
        assignment = assignment_on(task)
        assert assignment is not None
        # The pages' gunicorn does not listen on the picks' address, so this pick is served by the other.
        page = browser.post(f"http://127.0.0.1:{pick_port}/s/{study.slug}/judgments/",
                            {"assignment": str(assignment), "choice": "2"}, task)  # fmt: skip
        assert page.status == 200
        assert assignment_on(page) not in (None, assignment)
        assert Judgment.objects.filter(assignment_id=assignment, chosen_slot=2).count() == 1

        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text(errors="replace")[-4000:]
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)  # all four stopped, nothing left in the group
    finally:
        if process.poll() is None:
            kill_group(process)


@pytest.mark.parametrize(("setting", "message"), [
    ({"PICK_BIND": "same"}, "must be another address than BIND"),
    ({"PICK_BIND": "127.0.0.1:1", "PICK_PRIORITY_NICE": "-5"}, "PICK_PRIORITY_NICE must be a whole number"),
    ({"PICK_BIND": "127.0.0.1:1", "PICK_PRIORITY_NICE": "ten"}, "PICK_PRIORITY_NICE must be a whole number"),
])  # fmt: skip
def test_serve_prod_refuses_a_pick_setting_that_cannot_work_before_starting_anything(tmp_path, setting, message):
    port = free_port()
    if setting["PICK_BIND"] == "same":
        setting = {**setting, "PICK_BIND": f"127.0.0.1:{port}"}
    env = production_env(static_root=tmp_path / "static", var_dir=tmp_path / "var", port=port, **setting)
    done = subprocess.run(["scripts/serve-prod"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "static").exists()  # nothing ran: no migration, no collectstatic
