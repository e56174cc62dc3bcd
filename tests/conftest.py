"""Shared fixtures, for every test module (no test module imports another):

- `rng`: a seeded NumPy generator;
- the cast of users: `researcher` (staff and superuser), `researcher_client` (logged in as them),
  `outsider` (logged in, not staff);
- `celery_worker_process`: a real `celery worker` subprocess over Redis (`WorkerProcess`);
- `tiny_model`: a tiny random Llama on disk, built once a session (tests/tinymodels.py);
- `browser`: one headless Chromium per test module, through Playwright;
- `judged_study`: the judged study of the results tests (`tests.judgments.make_judged_study`).

Builders that are not fixtures live beside this file: tests/factories.py (rows), judgments.py,
annotator.py (the annotator's path through the test client), browser_flow.py, pipeline.py,
csv_study.py, prodserver.py and tinymodels.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Tests save tiny models under pytest's temporary folders and load them as local models: allow
# that folder (workers.generation.loading.allowed_model_roots), for worker subprocesses too.
os.environ.setdefault("UALIGN_MODEL_DIRS", tempfile.gettempdir())



@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(20261122)


@pytest.fixture
def researcher(django_user_model):
    return django_user_model.objects.create_user("researcher", password="pw-researcher", is_staff=True, is_superuser=True)


@pytest.fixture
def researcher_client(client, researcher):
    client.force_login(researcher)
    return client


@pytest.fixture
def outsider(django_user_model):
    """Logged in, but not staff."""
    return django_user_model.objects.create_user("outsider", password="pw-outsider")


class WorkerProcess:
    """A real `celery worker` subprocess against the test database and the Redis broker."""

    def __init__(self, log_path: Path, queues: str = "gpu,default") -> None:
        self.log_path = log_path
        self.queues = queues
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        db = connection.settings_dict
        url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        return {**os.environ, "DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL, "CELERY_BROKER_URL": settings.CELERY_BROKER_URL}

    def start(self, timeout: float = 60) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ualign_web", "worker", "-Q", self.queues,
             "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
             "--hostname", f"test-{os.getpid()}@%h"],
            cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log()}")
            if b" ready." in self.log_path.read_bytes()[offset:]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill_all(self) -> None:
        """SIGKILL the worker and its pool children, as a crash or an OOM kill would."""
        if self.process and self.process.poll() is None:
            subprocess.run(["pkill", "-KILL", "-P", str(self.process.pid)], check=False)
            self.process.kill()
            self.process.wait()


def _purge_broker() -> None:
    from ualign_web.celery import app

    with app.connection_for_write() as conn:
        for queue in ("default", "gpu"):
            conn.default_channel.queue_purge(queue)


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A running worker; tests that use it must commit their rows (transactional_db)."""
    if not settings.REDIS_URL:
        pytest.fail("Set REDIS_URL (the README's test command does): worker tests use Redis.")
    _purge_broker()
    worker = WorkerProcess(tmp_path / "worker.log")
    worker.start()
    yield worker
    worker.stop()
    _purge_broker()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Llama on disk (tests/tinymodels.py), built once for the session."""
    from tests.tinymodels import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "llama", initializer_range=0.5)


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; each test opens its own page or context (own cookies)."""
    if not shutil.which(CHROMIUM):
        pytest.fail("Chromium is missing: run `make browser` (apt-get install chromium).")
    # Playwright's sync API runs an event loop in this thread; Django's ORM refuses that by default.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()


@pytest.fixture
def judged_study():
    """Two policies' items on three prompts, judged by three annotators, plus the odd cases
    (can't decide, attention checks, a simulated annotator): `tests.judgments.make_judged_study`."""
    from tests.judgments import make_judged_study

    return make_judged_study()
