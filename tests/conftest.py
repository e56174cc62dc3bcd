"""Shared fixtures, for every test module (no test module imports another: tests/test_no_test_module_imports.py checks):

- `rng`: a seeded NumPy generator;
- the cast of users: `researcher` (staff and superuser), `researcher_client` (logged in as them),
  `outsider` (logged in, not staff);
- `celery_worker_process`: a real `celery worker` subprocess over Redis (`WorkerProcess`);
- `tiny_model`: a tiny random Llama on disk, built once a session (tests/tinymodels.py);
- `browser`: one headless Chromium per test module, through Playwright;
- `judged_study`: the judged study of the results tests (`tests.judgments.make_judged_study`);
- `draft_study` (a draft with 5 prompts and the `DRAFT_POLICIES`) and `piloted_study` (two
  policies' items, each judged by the same 5 people): the planning tests';
- `dead_port` (bound, refuses connections) and `silent_port` (accepts, never answers): a broker
  or database that is down or hung.

Builders that are not fixtures live beside this file: tests/factories.py (rows, upload files,
the admin's study form and plan URL), judgments.py,
annotator.py (the annotator's path through the test client), browser_flow.py, pipeline.py,
csv_study.py, prodserver.py and tinymodels.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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


DRAFT_POLICIES = ["sample", "nlhf", "multiplayer"]


@pytest.fixture
def draft_study():
    from tests.factories import make_policy, make_prompt, make_study

    study = make_study(slug="draft", title="Draft study", k_values=[1, 4], annotations_per_item=2,
                       items_per_participant=12, attention_check_rate=0.1)
    for i in range(5):
        make_prompt(study=study, external_id=f"p{i}")
    for name in DRAFT_POLICIES:
        make_policy(study=study, name=name)
    return study


@pytest.fixture
def piloted_study():
    """Two policies at k = 2 on 8 prompts, every item judged by the same 5 people (160 judgments)."""
    import numpy as np

    from studies.models import Study
    from tests.factories import (
        make_item,
        make_participant,
        make_policy,
        make_prompt,
        make_study,
    )
    from tests.judgments import make_judgment

    study = make_study(slug="pilot", title="Pilot", k_values=[2], status=Study.Status.LIVE, annotations_per_item=5)
    alpha, beta = make_policy(study=study, name="alpha"), make_policy(study=study, name="beta")
    people = [make_participant(study=study) for _ in range(5)]
    rng = np.random.default_rng(16)
    for i in range(8):
        prompt = make_prompt(study=study, external_id=f"q{i}")
        for policy, label, other in [(alpha, "adversary", None), (alpha, "beta", beta),
                                     (beta, "adversary", None), (beta, "alpha", alpha)]:
            item = make_item(study=study, prompt=prompt, policy=policy, texts=[f"{policy.name} {label} {i}", f"other {label} {i}"],
                             counts=[(2, 0), (0, 1)], opponent_label=label, opponent_policy=other,
                             predicted_win_rate=0.7 if label == "adversary" else 0.5)
            lean = rng.uniform(0.2, 0.8)  # the prompt's own pull
            for person in people:
                make_judgment(item=item, participant=person, pick=0 if rng.random() < lean else 1)
    return study


@pytest.fixture
def dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]  # bound, never listening: connections are refused


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers (a hung broker)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for s in held:
        s.close()
    listener.close()
