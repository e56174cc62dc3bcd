"""Locust users for the peers in `bench/peers/run_peers.py` (run by it, headless).

The profile is ualign's (`bench/locustfile_annotate.py`, whose users drive ualign in the same
run): an annotator logs in or joins, fetches a task, then submits an annotation and gets the next
task, again and again, either at once (closed loop) or after 3-8 s of reading (think time).

"pick" is the annotator's wait from pressing submit to having the next task: one request on
ualign (the htmx POST answers with the next task); on each peer, the requests its own web page
makes for it, timed together and reported under the same row names as ualign's, so that the
bench reads every tool's figures the same way:
- Label Studio (its labeling stream, as its front end does it): POST
  /api/tasks/<id>/annotations/, then GET /api/projects/<id>/next/;
- Potato (its annotation page, as static/annotation.js does it): POST /updateinstance, POST
  /annotate {"action": "next_instance"}, then GET /annotate, the next task's page.
Each request is in locust's table under its own name as well.

Environment: BENCH_TOOL (label-studio or potato), BENCH_ACK_FILE (where each process writes the
annotations the tool acknowledged, for the bench to check against its store), BENCH_PARTICIPANTS
(JSON: Label Studio's project, annotators and prepared sessions), BENCH_PREPARED (non-empty: each
Label Studio user starts with one of the prepared sessions, as the closed loop does),
BENCH_USERS (the think-time run's annotators: picks before all have logged in are reported apart,
as ualign's are), BENCH_PASSWORD (Label Studio's annotators' password).
"""

from __future__ import annotations

import http.cookiejar
import itertools
import json
import os
import random
import re
import secrets
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, between, constant, events, task

TOOL = os.environ.get("BENCH_TOOL", "")
ACK_FILE = os.environ.get("BENCH_ACK_FILE", "")
SETUP = json.loads(Path(os.environ["BENCH_PARTICIPANTS"]).read_text()) if os.environ.get("BENCH_PARTICIPANTS") else {}
PASSWORD = os.environ.get("BENCH_PASSWORD", "")
PREPARED = list(SETUP.get("annotators", [])) if os.environ.get("BENCH_PREPARED") else []
ACKED = {"sent": 0, "picks": 0, "failed": 0, "completed_participants": 0}
ARRIVING = int(os.environ.get("BENCH_USERS") or 0)
ONBOARDED = {"users": 0}
NEXT_USER = itertools.count()
POTATO_INSTANCE = re.compile(r'id="instance_id"[^>]*?value="([^"]*)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class PeerAnnotator(FastHttpUser):
    """Logs in (or starts logged in), then submits and fetches tasks; `wait_time` by subclass."""

    abstract = True

    def on_start(self) -> None:
        self.task_id: str | None = None
        self.tool = LabelStudio(self) if TOOL == "label-studio" else Potato(self)
        self.tool.start()
        if not getattr(self, "onboarded", False):
            self.onboarded = True
            ONBOARDED["users"] += 1

    @task
    def pick(self) -> None:
        if not self.task_id:
            self.tool.start()
            return
        name = "pick (while annotators arrive)" if ONBOARDED["users"] < ARRIVING else "pick"
        ACKED["sent"] += 1
        started = time.perf_counter()
        saved, error = self.tool.submit_and_next()
        elapsed = 1000 * (time.perf_counter() - started)
        if saved:
            ACKED["picks"] += 1
        else:
            ACKED["failed"] += 1
        self.environment.events.request.fire(request_type="FLOW", name=name, response_time=elapsed,
                                             response_length=0, exception=error, context={})


class LabelStudio:
    """An annotator in Label Studio's labeling stream of the bench's project."""

    def __init__(self, user: PeerAnnotator) -> None:
        self.user, self.client, self.project = user, user.client, SETUP.get("project")
        self.headers: dict[str, str] = {}

    def start(self) -> None:
        host = self.user.host.split("://", 1)[1].split(":")[0]
        self.client.cookiejar.clear()
        if PREPARED:  # closed loop: a session made server-side, as ualign's prepared participants
            prepared = PREPARED.pop()
            csrf = secrets.token_hex(16)
            self.client.cookiejar.set_cookie(_cookie(host, SETUP["session_cookie"], prepared["session"]))
            self.client.cookiejar.set_cookie(_cookie(host, SETUP["csrf_cookie"], csrf))
        else:  # the login page, then its form (Django's, PBKDF2-hashed password)
            annotators = SETUP["annotators"]
            email = annotators[next(NEXT_USER) % len(annotators)]["email"]
            page = self.client.get("/user/login/", name="label-studio: login page")
            token = _first(CSRF, page.text) or ""
            csrf = self._cookie_value(SETUP["csrf_cookie"]) or ""
            self.client.post("/user/login/", data={"email": email, "password": PASSWORD,
                                                   "csrfmiddlewaretoken": token, "persist_session": "on"},
                             headers={"Referer": self.user.host + "/user/login/"}, name="label-studio: login")  # fmt: skip
        self.headers = {"X-CSRFToken": csrf, "Content-Type": "application/json",
                        "Referer": self.user.host + f"/projects/{self.project}/data"}  # fmt: skip
        self._next()

    def _cookie_value(self, name: str) -> str | None:
        return next((c.value for c in self.client.cookiejar if c.name == name), None)

    def _next(self) -> Exception | None:
        with self.client.get(f"/api/projects/{self.project}/next/", name="label-studio: next task",
                             headers=self.headers, catch_response=True) as response:  # fmt: skip
            if response.status_code == 200 and response.text:
                self.user.task_id = str(json.loads(response.text)["id"])
                return None
            self.user.task_id = None
            error = Exception(f"next task: status {response.status_code}")
            response.failure(error)
            return error

    def submit_and_next(self) -> tuple[bool, Exception | None]:
        choice = random.choice(["Response 1", "Response 2"])
        body = {"result": [{"from_name": "preference", "to_name": "prompt", "type": "choices",
                            "value": {"choices": [choice]}}],
                "lead_time": round(random.uniform(3, 8), 3), "task": int(self.user.task_id), "project": self.project}  # fmt: skip
        with self.client.post(f"/api/tasks/{self.user.task_id}/annotations/?project={self.project}",
                              data=json.dumps(body), headers=self.headers, name="label-studio: submit annotation",
                              catch_response=True) as response:  # fmt: skip
            if response.status_code != 201:
                self.user.task_id = None
                error = Exception(f"submit: status {response.status_code}")
                response.failure(error)
                return False, error
        return True, self._next()


class Potato:
    """An annotator on Potato's annotation page, joined by a crowd link (url_direct login)."""

    def __init__(self, user: PeerAnnotator) -> None:
        self.user, self.client = user, user.client

    def start(self) -> None:
        self.client.cookiejar.clear()
        worker = f"w{os.getpid()}x{next(NEXT_USER)}"
        page = self.client.get(f"/?PROLIFIC_PID={worker}", name="potato: join by crowd link")
        if POTATO_INSTANCE.search(page.text or "") is None:
            page = self.client.get("/annotate", name="potato: annotation page")
        self.user.task_id = _first(POTATO_INSTANCE, page.text)

    def submit_and_next(self) -> tuple[bool, Exception | None]:
        label = random.choice(["Response 1", "Response 2"])
        body = {"instance_id": self.user.task_id, "annotations": {f"preference:{label}": label},
                "span_annotations": [], "client_timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "response_time_seconds": round(random.uniform(3, 8), 3)}  # fmt: skip
        headers = {"Content-Type": "application/json"}
        with self.client.post("/updateinstance", data=json.dumps(body), headers=headers,
                              name="potato: save annotation", catch_response=True) as response:  # fmt: skip
            status = _json_status(response.text)
            if response.status_code != 200 or status in ("error", "blocked"):
                self.user.task_id = None
                error = Exception(f"save: status {response.status_code} {status}")
                response.failure(error)
                return False, error
        navigation = {"Content-Type": "application/json", "X-Potato-Navigation": "1"}
        self.client.post("/annotate", data=json.dumps({"action": "next_instance", "instance_id": self.user.task_id}),
                         headers=navigation, name="potato: next instance")  # fmt: skip
        page = self.client.get("/annotate", name="potato: annotation page")
        following = _first(POTATO_INSTANCE, page.text)
        if not following or following == self.user.task_id:
            self.user.task_id = None
            return True, Exception("no next task")
        self.user.task_id = following
        return True, None


class ClosedLoopAnnotator(PeerAnnotator):
    """The next annotation as soon as the task arrives."""

    wait_time = constant(0)


class RealisticAnnotator(PeerAnnotator):
    """Reads the prompt and both responses before choosing: 3-8 s between annotations. Arrives as
    ualign's do (bench/locustfile_annotate.py): after a random wait in [0, BENCH_ARRIVAL_SPREAD),
    so that the arrivals spread over the burst's seconds instead of locust's batches."""

    wait_time = between(3, 8)

    def on_start(self) -> None:
        spread = float(os.environ.get("BENCH_ARRIVAL_SPREAD") or 0)
        if spread > 0:
            gevent.sleep(random.uniform(0, spread))
        super().on_start()


def _json_status(text: str | None) -> str | None:
    try:
        body = json.loads(text or "")
    except ValueError:
        return None
    return body.get("status") if isinstance(body, dict) else None


def _cookie(host: str, name: str, value: str) -> http.cookiejar.Cookie:
    return http.cookiejar.Cookie(0, name, value, None, False, host, False, False, "/", True, False, None, False,
                                 None, None, {})  # fmt: skip


def _first(pattern: re.Pattern[str], text: str | None) -> str | None:
    match = pattern.search(text or "")
    return match.group(1) if match else None


@events.test_stop.add_listener
def _write_acknowledged(**_kwargs) -> None:
    if ACK_FILE:
        with open(ACK_FILE, "w") as out:
            json.dump(ACKED, out)
