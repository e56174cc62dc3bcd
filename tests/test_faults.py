"""Faults in production, on the real parts: gunicorn with DEBUG off, PostgreSQL, Redis, Celery.

- a gunicorn worker killed with SIGKILL during a burst of picks: every acknowledged pick is
  saved exactly once;
- the database unreachable (refused, then hung) for a moment: a clear 503 page, then recovery
  without a restart;
- Redis restarted in the middle of a pipeline: the pipeline finishes.
(A Celery worker killed mid-step is tests/test_tasks_worker.py.)

The database is cut through a TCP proxy this test owns, and Redis is restarted as a separate
redis-server on its own port: the machine's shared PostgreSQL and Redis are never touched.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest
from django.db.models import Count

from studies.models import Candidate, Job, Judgment, Participant, Study
from studies.simulated_annotators import Page, SimulationError
from tests.conftest import WorkerProcess
from tests.pipeline import pipeline_study
from tests.prodserver import (
    ROOT,
    Gunicorn,
    ProxiedBrowser,
    TcpProxy,
    annotation_study,
    assignment_on,
    collected_static,  # noqa: F401  (fixture)
    free_port,
    production_env,
    server_database_url,
    walk_to_first_task,
)

pytestmark = pytest.mark.django_db(transaction=True)

SAVED = "Your picks so far are saved."
NETWORK_ERRORS = (SimulationError, OSError, http.client.HTTPException)


@pytest.fixture
def gunicorn(collected_static, tmp_path):  # noqa: F811
    servers: list[Gunicorn] = []

    def start(**env: str) -> Gunicorn:
        server = Gunicorn(production_env(static_root=collected_static, var_dir=tmp_path / "var", port=free_port(),
                                         **env), tmp_path / f"gunicorn-{len(servers)}.log")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


# --------------------------------------------------------------------------------------------
# A web worker killed during a burst of picks


@dataclass
class Annotator:
    """One simulated person picking as fast as the server answers, over htmx."""

    n: int
    study: Study
    base_url: str
    acknowledged: dict[str, int] = field(default_factory=dict)  # rationale token -> assignment
    failures: int = 0
    finished: bool = False
    error: str = ""

    def reload(self, browser: ProxiedBrowser) -> Page:
        for _ in range(50):
            try:
                page = browser.get(f"/s/{self.study.slug}/task/")
                if page.status == 200:
                    return page
            except NETWORK_ERRORS:
                pass
            time.sleep(0.1)
        raise AssertionError(f"annotator {self.n}: the task page did not come back")

    def run(self, start: threading.Barrier) -> None:
        try:
            browser = ProxiedBrowser(self.base_url, timeout=30)
            page = walk_to_first_task(browser, self.study)
            start.wait(timeout=60)
            self._pick_all(browser, page)
        except Exception as exc:  # reported by the test, with the annotator's number
            self.error = repr(exc)

    def _pick_all(self, browser: ProxiedBrowser, page: Page) -> None:
        for _ in range(10 * self.study.items_per_participant):
            assignment = assignment_on(page)
            if assignment is None:
                self.finished = page.path.endswith("/done/")
                return
            token = f"annotator-{self.n}-assignment-{assignment}"
            fields = {"assignment": str(assignment), "choice": "1", "rationale": token}
            try:
                status, headers, body = browser.htmx_post(f"/s/{self.study.slug}/judgments/", fields, page)
            except NETWORK_ERRORS:
                status, headers, body = 0, {}, ""
            if status == 200 and (headers.get("HX-Redirect") or assignment_on(body) not in (None, assignment)):
                self.acknowledged[token] = assignment
                page = Page(page.url, 200, body) if not headers.get("HX-Redirect") else browser.get(headers["HX-Redirect"])
            else:
                # Not acknowledged (the worker died under it): reload, as the page tells the person
                # to, and pick again if the task is still open.
                self.failures += 1
                page = self.reload(browser)


def _judged(study: Study) -> int:
    return Judgment.objects.filter(assignment__participant__study=study).count()


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_acknowledged_pick_is_saved_once_when_a_web_worker_is_killed_mid_burst(gunicorn):
    people, per_person = 6, 12
    study = annotation_study(participants=people, items_per_participant=per_person)
    server = gunicorn(WEB_CONCURRENCY="2")
    start = threading.Barrier(people + 1)
    annotators = [Annotator(n, study, server.base_url) for n in range(people)]
    threads = [threading.Thread(target=a.run, args=(start,), daemon=True) for a in annotators]
    for thread in threads:
        thread.start()
    start.wait(timeout=60)

    killed = []
    for milestone in (8, 24, 40):  # three kills, spread over the burst
        _wait_until(lambda m=milestone: _judged(study) >= m, 60, f"{milestone} judgments")
        victim = min(server.worker_pids())
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        _wait_until(lambda v=victim: v not in server.worker_pids() and len(server.worker_pids()) == 2, 30,
                    "gunicorn to replace the killed worker")
    for thread in threads:
        thread.join(timeout=120)

    assert [a.error for a in annotators if a.error] == [], server.log()
    assert all(a.finished for a in annotators)
    assert not set(killed) & server.worker_pids()
    acknowledged = {token: assignment for a in annotators for token, assignment in a.acknowledged.items()}
    saved = dict(Judgment.objects.filter(assignment__participant__study=study).values_list("rationale", "assignment_id"))
    # Every acknowledged pick is in the database, on its assignment, once.
    assert {t: saved.get(t) for t in acknowledged} == acknowledged
    duplicates = (Judgment.objects.filter(assignment__participant__study=study).values("rationale")
                  .annotate(n=Count("id")).filter(n__gt=1))
    assert list(duplicates) == []
    # And nothing else: each task judged once, by the pick its page showed.
    assert len(saved) == people * per_person
    assert Participant.objects.filter(study=study, status=Participant.Status.COMPLETED).count() == people
    # The kills landed on busy workers (two workers, six people picking): some picks were cut off.
    assert sum(a.failures for a in annotators) >= 1, "no pick was interrupted; the kills should land mid-request"


# --------------------------------------------------------------------------------------------
# The database unavailable for a moment


def test_an_unreachable_database_gives_a_clear_503_and_the_site_recovers_without_a_restart(gunicorn):
    from django.db import connection

    proxy = TcpProxy(int(connection.settings_dict["PORT"] or 5432)).start()
    try:
        server = gunicorn(DATABASE_URL=server_database_url(port=proxy.port), DB_CONNECT_TIMEOUT="2", WEB_TIMEOUT="60")
        study = annotation_study(participants=1, items_per_participant=2)
        browser = ProxiedBrowser(server.base_url)
        page = walk_to_first_task(browser, study)
        first = assignment_on(page)
        workers = server.worker_pids()
        task_path = f"/s/{study.slug}/task/"
        pick = {"assignment": str(first), "choice": "2", "rationale": "after the outage"}

        for cut in (proxy.down, proxy.blackhole):  # refused, then accepted and never answered
            cut()
            status, headers, body = browser.raw(task_path)
            assert status == 503, (cut.__name__, body[:300])
            assert headers["Retry-After"] == "60"
            assert SAVED in body.decode()
            assert "try again in a minute" in body.decode()
            assert browser.htmx_post(f"/s/{study.slug}/judgments/", pick, page)[0] == 503
            status, _, body = browser.raw("/readyz")
            assert (status, body) == (503, b"database unavailable\n")
            assert browser.raw("/healthz")[0] == 200
        assert not Judgment.objects.filter(assignment_id=first).exists()

        proxy.up()
        page = browser.get(task_path)
        assert page.status == 200
        assert assignment_on(page) == first  # the same task, still open
        status, _, body = browser.htmx_post(f"/s/{study.slug}/judgments/", pick, page)
        assert status == 200
        assert assignment_on(body) not in (None, first)
        assert list(Judgment.objects.filter(assignment_id=first).values_list("chosen_slot", flat=True)) == [2]
        assert browser.raw("/readyz")[0] == 200
        assert server.worker_pids() == workers, "no worker was killed by a timeout or restarted"
    finally:
        proxy.stop()


# --------------------------------------------------------------------------------------------
# Redis restarted during a pipeline


class RedisServer:
    """A redis-server of this test's own, on a free port, persisting to disk as a broker should."""

    def __init__(self, directory) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_until(self.answers, 10, "redis-server to start")

    def answers(self) -> bool:
        result = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return result.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.process.wait(timeout=10)


def test_a_pipeline_finishes_when_redis_restarts_in_the_middle(tmp_path, tiny_model, transactional_db):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing (apt-get install redis-server)")
    redis = RedisServer(tmp_path)
    redis.start()
    worker = WorkerProcess(tmp_path / "worker.log")
    base_env = worker.env()
    worker.env = lambda: {**base_env, "REDIS_URL": redis.url, "CELERY_BROKER_URL": redis.url}
    try:
        worker.start()
        study = pipeline_study(tiny_model, n_prompts=8, pool=8, max_new_tokens=32, attention_check_rate=0)
        study.generator.batch_size = 2
        study.generator.save()
        # Press Prepare from another process that uses this Redis (this one's Celery app uses the shared one).
        code = (f"from studies import services; from studies.models import Study; "
                f"services.prepare_study(study=Study.objects.get(pk={study.pk}))")
        subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=worker.env(), check=True,
                       timeout=120)

        _wait_until(lambda: Candidate.objects.filter(prompt__study=study).exists(), 120, "the first prompt's pool")
        redis.stop()
        generate = Job.objects.get(study=study, kind=Job.Kind.GENERATE)
        assert generate.status == Job.Status.RUNNING, "the restart should land mid-generation; make the work longer"
        time.sleep(2)  # the worker loses its broker while it generates
        redis.start()

        _wait_until(lambda: Study.objects.get(pk=study.pk).status != Study.Status.PREPARING, 240, "the pipeline")
        study.refresh_from_db()
        steps = Job.objects.filter(study=study, parent__isnull=False)
        assert study.status == Study.Status.READY, (list(steps.values_list("kind", "status", "error")), worker.log())
        assert set(steps.values_list("status", flat=True)) == {Job.Status.DONE}
        assert worker.process.poll() is None, "the same worker, reconnected, finished the job"
        assert "Connection to broker lost" in worker.log() or "Cannot connect to redis" in worker.log(), worker.log()
        rows = Candidate.objects.filter(prompt__study=study, generator=study.generator)
        assert sum(rows.values_list("multiplicity", flat=True)) == 8 * 8
    finally:
        worker.stop()
        redis.stop()
