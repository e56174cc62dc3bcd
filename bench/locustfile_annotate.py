"""Locust users for `bench/load_annotate.py` (run by it, headless; not a Django module).

Annotators walk the real pages as a browser with htmx does: the study link's landing page, Start
(the join POST), consent, instructions, then picks, each an htmx POST that returns the next task.
A participant who finishes their share joins again as a new one. Every request carries the
headers of a TLS-terminating proxy (X-Forwarded-Proto, an https Origin), as in production.

Closed-loop annotators start as participants the bench created server-side (as the simulated
annotators of studies/simulated_annotators.py join), with their first task handed out, so that
the run measures picks rather than a burst of 100 simultaneous onboardings; the realistic ones
onboard over HTTP.

Environment: BENCH_SLUG, BENCH_INVITE (the study), BENCH_ACK_FILE (where each process writes
how many picks the server acknowledged, for the bench to check against the database),
BENCH_PARTICIPANTS (a JSON list of prepared participants: cookies and first assignment),
BENCH_USERS (the realistic run's annotators: picks before they have all onboarded are reported
apart), BENCH_ARRIVAL_SPREAD (seconds; see RealisticAnnotator).
"""

from __future__ import annotations

import gc
import http.cookiejar
import json
import os
import random
import re
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, between, constant, events, task

SLUG = os.environ.get("BENCH_SLUG", "")
INVITE = os.environ.get("BENCH_INVITE", "")
ACK_FILE = os.environ.get("BENCH_ACK_FILE", "")
PREPARED = json.loads(Path(os.environ["BENCH_PARTICIPANTS"]).read_text()) if os.environ.get("BENCH_PARTICIPANTS") else []
ASSIGNMENT = re.compile(r'name="assignment" value="(\d+)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
# Picks sent, acknowledged (a 200 with the next task or the completion redirect) and refused.
# A pick still in flight when locust stops may be saved without being acknowledged.
ACKED = {"sent": 0, "picks": 0, "failed": 0, "completed_participants": 0, "joins": 0, "walks": 0}
# The realistic run's annotators arrive together (BENCH_USERS of them within seconds). Until each
# has onboarded, picks are reported apart, as "pick (while annotators arrive)": their round trips
# queue behind the arrivals' page loads. After that, "pick": the study at its full 300 annotators.
ARRIVING = int(os.environ.get("BENCH_USERS") or 0)
ARRIVAL_SPREAD = float(os.environ.get("BENCH_ARRIVAL_SPREAD") or 0)
ONBOARDED = {"users": 0}


class Healthz(FastHttpUser):
    """The baseline: the load balancer's probe, answered before any view or database."""

    wait_time = constant(0)

    @task
    def healthz(self) -> None:
        self.client.get("/healthz", name="healthz")


class Annotator(FastHttpUser):
    """A closed-loop annotator: the next pick as soon as the task arrives."""

    wait_time = constant(0)
    abstract = True

    def on_start(self) -> None:
        self.origin = "https://" + self.host.split("://", 1)[1].rstrip("/")
        self.headers = {"X-Forwarded-Proto": "https", "Origin": self.origin}
        self.assignment: str | None = None
        self.csrf = ""
        self.join()

    def join(self) -> None:
        """Landing page → Start → consent → instructions → the first task (full pages, no htmx)."""
        self.client.cookiejar.clear()
        base, started = f"/s/{SLUG}/", time.perf_counter()
        page = self.client.get(f"{base}?invite={INVITE}", name="onboarding: landing", headers=self.headers)
        self.csrf = _first(CSRF, page.text)
        form = {"invite": INVITE, "csrfmiddlewaretoken": self.csrf}
        joined = self.client.post(base, data=form, name="onboarding: join", headers=self._referer(base))
        if joined.status_code == 200 and 'name="decision"' in (joined.text or ""):  # the consent page
            ACKED["joins"] += 1
        self.client.post(f"{base}consent/", data={"decision": "accept", "csrfmiddlewaretoken": self.csrf},
                         name="onboarding: consent", headers=self._referer(f"{base}consent/"))  # fmt: skip
        page = self.client.post(f"{base}instructions/", data={"csrfmiddlewaretoken": self.csrf},
                                name="onboarding: instructions and first task",
                                headers=self._referer(f"{base}instructions/"))  # fmt: skip
        self.assignment = _first(ASSIGNMENT, page.text)
        if self.assignment:  # the whole walk, landing to first task, as one more row of the stats
            ACKED["walks"] += 1
            elapsed = 1000 * (time.perf_counter() - started)
            self.environment.events.request.fire(request_type="WALK", name="onboarding: whole walk",
                                                 response_time=elapsed, response_length=0, exception=None,
                                                 context={})  # fmt: skip
        if not getattr(self, "onboarded", False):
            self.onboarded = True
            ONBOARDED["users"] += 1

    def _referer(self, path: str) -> dict[str, str]:
        return {**self.headers, "Referer": self.origin + path}

    @task
    def pick(self) -> None:
        if not self.assignment:
            self.join()
            return
        data = {"assignment": self.assignment, "choice": str(random.randint(1, 2))}
        headers = {**self._referer(f"/s/{SLUG}/task/"), "HX-Request": "true", "X-CSRFToken": self.csrf}
        ACKED["sent"] += 1
        name = "pick (while annotators arrive)" if ONBOARDED["users"] < ARRIVING else "pick"
        with self.client.post(f"/s/{SLUG}/judgments/", data=data, headers=headers, name=name,
                              catch_response=True) as response:  # fmt: skip
            if response.status_code != 200:
                ACKED["failed"] += 1
                response.failure(f"status {response.status_code}")
                self.assignment = None
                return
            ACKED["picks"] += 1
            if "HX-Redirect" in response.headers:  # the share is done: the completion page
                ACKED["completed_participants"] += 1
                self.assignment = None
                return
            self.assignment = _first(ASSIGNMENT, response.text)
            if self.assignment is None:
                response.failure("no next task in the response")


class ClosedLoopAnnotator(Annotator):
    """Starts as a prepared participant (when one is left), then picks without pause."""

    wait_time = constant(0)

    def on_start(self) -> None:
        if not PREPARED:
            super().on_start()
            return
        prepared = PREPARED.pop()
        self.origin = "https://" + self.host.split("://", 1)[1].rstrip("/")
        self.headers = {"X-Forwarded-Proto": "https", "Origin": self.origin}
        host = self.host.split("://", 1)[1].split(":")[0]
        for name, value in prepared["cookies"].items():
            self.client.cookiejar.set_cookie(_cookie(host, name, value))
        self.csrf = prepared["csrf"]
        self.assignment = str(prepared["assignment"])


class RealisticAnnotator(Annotator):
    """Reads both responses before picking: 3-8 s between picks.

    Locust starts users in batches: with a spawn rate of r per second, r of them at once every
    second (locust/dispatch.py). People following a link do not arrive in lockstep, so with
    BENCH_ARRIVAL_SPREAD=s each waits a uniform random time in [0, s) before opening the link:
    with s = 1 (the interval between batches) the arrivals are spread evenly over the burst's
    seconds instead of landing in bursts of r within a millisecond. 0 keeps locust's batches.
    """

    wait_time = between(3, 8)

    def on_start(self) -> None:
        if ARRIVAL_SPREAD > 0:
            gevent.sleep(random.uniform(0, ARRIVAL_SPREAD))
        super().on_start()


def _cookie(host: str, name: str, value: str) -> http.cookiejar.Cookie:
    return http.cookiejar.Cookie(0, name, value, None, False, host, False, False, "/", True, False, None, False,
                                 None, None, {})  # fmt: skip


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text or "")
    return match.group(1) if match else None


@events.test_start.add_listener
def _freeze_locusts_heap(**_kwargs) -> None:
    """Keep the load generator's own pauses out of the latencies it measures: a full collection
    in locust's process (its ~50,000 objects from imports and setup) took 23-64 ms, four times
    in a 40 s run (2026-12-07), stretching every response in flight. Frozen, they are skipped
    (as gunicorn's master freezes the app: ualign_web/gunicorn_conf.py)."""
    gc.collect()
    gc.freeze()


@events.test_stop.add_listener
def _write_acknowledged(**_kwargs) -> None:
    if ACK_FILE:
        with open(ACK_FILE, "w") as out:
            json.dump(ACKED, out)
