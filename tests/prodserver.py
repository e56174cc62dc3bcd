"""Helpers for tests that run ualign as in production: gunicorn with DEBUG off on a free port,
a client that comes through a TLS-terminating proxy, and a TCP proxy that can cut the database.

Everything listens on 127.0.0.1 only, and every server started here is stopped by its fixture.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from studies.models import Study
from studies.simulated_annotators import Browser, Page
from tests.factories import make_item, make_policy, make_prompt, make_study

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_database_url(host: str | None = None, port: int | None = None) -> str:
    """The pytest database, as a URL for a server process (optionally through a proxy)."""
    db = connection.settings_dict
    return (f"postgres://{db['USER'] or 'postgres'}@{host or db['HOST'] or '127.0.0.1'}:"
            f"{port or db['PORT'] or 5432}/{db['NAME']}")


def production_env(*, static_root: Path, var_dir: Path, port: int, **overrides: str) -> dict[str, str]:
    """The environment of a production deployment, on this machine's test services."""
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": server_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "BIND": f"127.0.0.1:{port}",
        "STATIC_ROOT": str(static_root),
        "UALIGN_VAR_DIR": str(var_dir),
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return env


def collect_static(static_root: Path) -> None:
    """`collectstatic` with the production storage (hashed, compressed names), as serve-prod runs it."""
    env = production_env(static_root=static_root, var_dir=static_root.parent / "var", port=0)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                   cwd=ROOT, env=env, check=True, timeout=300)


# --------------------------------------------------------------------------------------------
# The client: a browser behind the TLS-terminating proxy


class _ProxiedCookies(http.cookiejar.DefaultCookiePolicy):
    """The proxy speaks HTTPS to the browser, so the browser keeps and sends Secure cookies."""

    def return_ok_secure(self, cookie, request) -> bool:
        return True


class ProxiedBrowser(Browser):
    """A no-JS browser whose requests arrive as the proxy forwards them: X-Forwarded-Proto https,
    and an https Origin on POSTs (CSRF compares it with the host)."""

    def __init__(self, base_url: str, *, timeout: float = 30) -> None:
        super().__init__(base_url, timeout=timeout)
        self.jar = http.cookiejar.CookieJar(policy=_ProxiedCookies())
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.origin = "https://" + base_url.split("://", 1)[1].rstrip("/")

    def _open(self, request: urllib.request.Request) -> Page:
        request.add_header("X-Forwarded-Proto", "https")
        if request.get_method() == "POST":
            request.add_header("Origin", self.origin)
        return super()._open(request)

    def htmx_post(self, path: str, fields: dict[str, str], page: Page) -> tuple[int, dict[str, str], str]:
        """POST as htmx does (HX-Request, the CSRF token in a header): status, headers, body."""
        token = page.parse().inputs.get("csrfmiddlewaretoken", "")
        data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true", "X-CSRFToken": token,
            "Referer": page.url, "X-Forwarded-Proto": "https", "Origin": self.origin,
        })
        self.requests += 1
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return response.status, dict(response.headers), response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode("utf-8", "replace")

    def raw(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """GET without following redirects: status, headers, body."""
        request = urllib.request.Request(self.base_url + path, headers={"X-Forwarded-Proto": "https", **(headers or {})})
        opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPCookieProcessor(self.jar))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def plain_get(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One GET with no cookies, no proxy headers and no redirects followed."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def walk_to_first_task(browser: Browser, study: Study) -> Page:
    """Open the invite link's landing page, press Start, consent, read the instructions: the first task page."""
    page = browser.get(f"/s/{study.slug}/?invite={study.invite_token}")
    assert page.status == 200, (page.status, page.path)
    fields = {name: value for name, value in page.parse().inputs.items() if name != "csrfmiddlewaretoken"}
    page = browser.post(page.url, fields, page)  # each step's answer is the next step's page
    assert page.path.endswith("/consent/"), (page.status, page.path, page.html[:500])
    page = browser.post(page.form_url, {"decision": "accept"}, page)
    assert page.path.endswith("/instructions/"), (page.status, page.path)
    page = browser.post(page.form_url, {}, page)
    assert page.path.endswith("/task/"), (page.status, page.path)
    return page


ASSIGNMENT = re.compile(r'name="assignment" value="(\d+)"')


def assignment_on(page: Page | str) -> int | None:
    match = ASSIGNMENT.search(page if isinstance(page, str) else page.html)
    return int(match.group(1)) if match else None


def annotation_study(*, participants: int, items_per_participant: int) -> Study:
    """A live study with exactly enough two-response items for `participants` people."""
    study = make_study(status=Study.Status.LIVE, items_per_participant=items_per_participant,
                       annotations_per_item=1, attention_check_rate=0, completion_code="DONE-CODE")
    policy = make_policy(study=study)
    for i in range(participants * items_per_participant):
        make_item(study=study, prompt=make_prompt(study=study, text=f"Prompt {i}"), policy=policy,
                  texts=[f"Answer A{i}", f"Answer B{i}"], counts=[(1, 0), (0, 1)], k=1)
    return study


# --------------------------------------------------------------------------------------------
# gunicorn with the production settings


@dataclass
class Gunicorn:
    """`gunicorn -c python:ualign_web.gunicorn_conf` (what serve-prod runs) in its own process group."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return "http://" + self.env["BIND"]

    def start(self, timeout: float = 60) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([GUNICORN, "--config", "python:ualign_web.gunicorn_conf"], cwd=ROOT,
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_health(self.base_url, timeout, self.process, self.log_path)
        deadline = time.monotonic() + timeout
        while len(self.worker_pids()) < int(self.env["WEB_CONCURRENCY"]) and time.monotonic() < deadline:
            time.sleep(0.1)

    def worker_pids(self) -> set[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(self.process)


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for_health(base_url: str, timeout: float, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{log_path.read_text(errors='replace')[-4000:]}")
        try:
            if plain_get(base_url + "/healthz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no /healthz in {timeout}s:\n{log_path.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prod") / "static"
    collect_static(root)
    return root


# --------------------------------------------------------------------------------------------
# A TCP proxy in front of PostgreSQL that the test can cut


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; `down()` refuses connections and drops open ones,
    `blackhole()` accepts connections and never answers (a hung server), `up()` forwards again."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "up"
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._listen()
        self._thread.start()
        return self

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            self._track(client)
            if self.mode == "blackhole":
                continue  # hold it open, say nothing
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._close(client)
                continue
            self._track(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.5)
                if self._stopped.is_set():
                    break
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except OSError:
            pass
        finally:
            self._close(a)
            self._close(b)

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.add(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        with contextlib.suppress(OSError):
            s.close()

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def down(self) -> None:
        """Connection refused, and every open connection dropped (a crashed or restarting server)."""
        self.mode = "down"
        listener, self._listener = self._listener, None
        if listener:
            listener.close()
        self._drop_all()

    def blackhole(self) -> None:
        """New connections are accepted and never answered (a hung server or a dead network path)."""
        self._drop_all()
        if self._listener is None:
            self._listen()
        self.mode = "blackhole"

    def up(self) -> None:
        self._drop_all()
        self.mode = "up"
        if self._listener is None:
            self._listen()

    def stop(self) -> None:
        self._stopped.set()
        self.down()
        self._thread.join(timeout=5)
