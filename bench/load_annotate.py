"""Load benchmark of the annotator's path, served as in production (`make bench-load`; issue #14).

One run:
1. creates a throwaway PostgreSQL database, migrates it and builds a live study of its own with
   bulk_create (two-text items and attention checks; no language model);
2. serves it with the production command (`scripts/serve-prod`: DEBUG off, gunicorn + Celery
   worker + beat) on 127.0.0.1, with `UALIGN_JOIN_LIMIT=0` (every simulated annotator comes from
   this one address), as docs/deployment.md deploys it: behind nginx, with the picks' own gunicorn
   (`PICK_BIND`; bench/nginx-ualign.conf routes them) and the rest niced below it (`--serve direct`:
   one gunicorn, no proxy);
3. drives it with locust, headless (`bench/locustfile_annotate.py`), three times, on 127.0.0.1
   only, each bounded in users and seconds:
   - `/healthz` with 100 closed-loop users: the baseline throughput;
   - picks with 100 closed-loop annotators (the next pick as soon as the task arrives);
   - picks with 300 annotators who think 3-8 s per task (a realistic study, and the burst of
     issue #26): p50/p95/p99 once all of them have started, and apart, the picks made while they
     were still arriving (all 300 within 10 s, each onboarding over HTTP: landing, join, consent,
     instructions and first task, each page's p50/p99 reported, and the whole walk's);
   - with --burst-users N (e.g. 1000): the same with N annotators arriving within 10 s;
4. checks the database: judgments saved = picks acknowledged, no assignment judged twice, no item
   past its quota, every item's counter equal to its live assignments, every join answered saved
   (and no more than those in flight), the seat counter equal to the seated rows; then walks
   --page-cpu newcomers through the onboarding pages in process, for each page's CPU (Django's
   and its PostgreSQL backend's); proxied, reads nginx's access log for each burst's server-side
   times (the gunicorns' queue and work, without the load generator's share);
5. prints the table for docs/benchmarks.md (and writes it as JSON with --out), stops the
   server and drops the database.

Targets (issue #14): closed-loop picks/s at least 30% of /healthz's in the same run, and a pick's
p99 under 150 ms in the realistic run (judged once all its annotators have started; the arrival
is reported beside it). Issue #26, on a quiet 2-core machine: every onboarding page's p99 under
500 ms and the pick's p99 under 150 ms throughout, arrival included.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = Path(sys.executable)
LOCUST = PY.parent / "locust"
LOCUSTFILE = ROOT / "bench" / "locustfile_annotate.py"
NGINX_CONF = ROOT / "bench" / "nginx-ualign.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # Debian's, off a non-root PATH


@dataclass
class Phase:
    """One locust run: what it drove, and what locust measured (times in ms)."""

    name: str
    users: int
    seconds: int
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    onboarding_p50: float | None = None
    # Picks made while the realistic run's annotators were still arriving (reported apart).
    arriving_requests: int = 0
    arriving_p50: float | None = None
    arriving_p95: float | None = None
    arriving_p99: float | None = None
    # Each onboarding page, and the whole walk (landing to first task): requests, failures, p50, p99.
    onboarding: dict[str, dict[str, float]] = field(default_factory=dict)
    joins: int = 0  # joins answered with the consent page
    walks: int = 0  # walks that reached a first task
    acknowledged: int = 0
    sent: int = 0  # picks sent; sent - acknowledged - refused were in flight when locust stopped
    refused: int = 0
    # Cores busy on average while locust ran, by who used them (`_cpu_seconds`): locust, nginx (when
    # proxied), gunicorn (both, when proxied), postgres, the rest of the machine (Celery worker and
    # beat, the kernel, anything else).
    cores: dict[str, float] = field(default_factory=dict)
    # What failed, as locust recorded it: "METHOD name: error" -> occurrences.
    failure_kinds: dict[str, int] = field(default_factory=dict)
    # When locust ran (epoch seconds), and, proxied, the burst's server-side times (`_server_side`).
    started: float = 0.0
    ended: float = 0.0
    server: dict[str, dict[str, float]] = field(default_factory=dict)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server (no database name); a throwaway database is made there")  # fmt: skip
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--database", default=f"ualign_bench_load_{os.getpid()}")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--share", type=int, default=50, help="items per participant (Prolific studies: 20-50)")
    parser.add_argument("--web-concurrency", default=os.environ.get("WEB_CONCURRENCY", "3"))
    parser.add_argument("--healthz-seconds", type=int, default=20)
    parser.add_argument("--closed-seconds", type=int, default=30)
    parser.add_argument("--realistic-seconds", type=int, default=90)
    parser.add_argument("--closed-users", type=int, default=100)
    parser.add_argument("--realistic-users", type=int, default=300,
                        help="the burst: annotators who all arrive within 10 s and onboard over HTTP")
    parser.add_argument("--burst-users", type=int, default=0,
                        help="a second, larger burst (e.g. 1000, within 10 s) after the others; 0: none")
    parser.add_argument("--arrival", choices=("spread", "batched"), default="spread",
                        help="how a burst's annotators arrive: spread evenly over its seconds (default), or in "
                             "locust's batches (spawn-rate users within a millisecond, once a second)")
    parser.add_argument("--page-cpu", type=int, default=30,
                        help="newcomers walked in process after the runs, for each page's CPU (0: skip)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--serve", choices=("proxied", "direct"), default="proxied",
                        help="proxied: nginx (bench/nginx-ualign.conf) in front of serve-prod with the picks' "
                             "own gunicorn (PICK_BIND), as docs/deployment.md deploys it; direct: locust to one "
                             "gunicorn")
    parser.add_argument("--server-log", type=Path,
                        help="keep serve-prod's output (gunicorn's access log included) here")
    return parser.parse_args()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_sql(server_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def _server_env(args: argparse.Namespace, database_url: str, port: int, tmp: Path) -> dict[str, str]:
    proxied = getattr(args, "serve", "direct") == "proxied"
    return {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis_url,
        "CELERY_BROKER_URL": args.redis_url,
        # Proxied, `port` is nginx's, and the two gunicorns listen on ports of their own.
        "BIND": f"127.0.0.1:{_free_port() if proxied else port}",
        **({"PICK_BIND": f"127.0.0.1:{_free_port()}"} if proxied else {}),
        "STATIC_ROOT": str(tmp / "static"),
        "UALIGN_VAR_DIR": str(tmp / "var"),
        "UALIGN_JOIN_LIMIT": "0",  # every simulated annotator comes from 127.0.0.1
        "DB_CONN_MAX_AGE": "60",  # docs/deployment.md: keep a connection per worker in production
        # Requests arrive as from the TLS-terminating proxy (X-Forwarded-Proto: https), but over plain
        # HTTP: locust's cookie jar would not send cookies marked Secure back over it.
        "SECURE_COOKIES": "false",
        "WEB_CONCURRENCY": str(args.web_concurrency),
        "CELERY_QUEUES": "default",
        "LOG_LEVEL": "WARNING",
        "PYTHON": str(PY),
    }


def build_study(items: int, share: int) -> tuple[str, str]:
    """A live study of `items` two-text items over items/10 prompts, plus one attention check per
    prompt, rendered as the items step leaves them. Returns (slug, invite token)."""
    from studies.models import (
        Candidate,
        ComparisonItem,
        GeneratorModel,
        ItemCandidate,
        Policy,
        Prompt,
        Study,
    )
    from studies.steps.items import refresh_planner_statistics
    from studies.templatetags.safe_markdown import versioned_html

    study = Study.objects.create(slug="bench-load", title="Load benchmark", consent_text="I agree.",
                                 instructions="Pick the response you prefer.", status=Study.Status.LIVE,
                                 k_values=[1], annotations_per_item=3, items_per_participant=share,
                                 attention_check_rate=0.1)  # fmt: skip
    policy = Policy.objects.create(study=study, name="sample", kind=Policy.Kind.SAMPLE)
    generator = GeneratorModel.objects.create(name="bench", model_ref="none")
    prompts = Prompt.objects.bulk_create(
        Prompt(study=study, text=f"Prompt {i}: explain **why** the sky is blue.") for i in range(items // 10)
    )
    texts = [(p, j, f"Answer {j} to prompt {p.pk}:\n\n- Rayleigh scattering\n- *shorter* wavelengths")
             for p in prompts for j in (0, 1, -1)]  # fmt: skip
    candidates = Candidate.objects.bulk_create(
        (Candidate(prompt=p, generator=None if j < 0 else generator, sample_index=j, text=t,
                   is_attention_check=j < 0, text_sha256=Candidate.hash_text(t), text_html=versioned_html(t))
         for p, j, t in texts), batch_size=5000,
    )  # fmt: skip
    by_prompt = {p.pk: candidates[3 * i : 3 * i + 3] for i, p in enumerate(prompts)}
    rows = [ComparisonItem(study=study, prompt=p, policy=policy, k=1, m=1, opponent_label="adversary", replicate=r)
            for p in prompts for r in range(10)]  # fmt: skip
    rows += [ComparisonItem(study=study, prompt=p, policy=None, k=1, m=1, opponent_label="attention",
                            is_attention_check=True) for p in prompts]  # fmt: skip
    made = ComparisonItem.objects.bulk_create(rows, batch_size=5000)
    shown = []
    for item in made:
        good, other, broken = by_prompt[item.prompt_id]
        shown += [ItemCandidate(item=item, candidate=good, slot=0, count_policy=1),
                  ItemCandidate(item=item, candidate=broken if item.is_attention_check else other, slot=1,
                                count_opponent=1)]  # fmt: skip
    ItemCandidate.objects.bulk_create(shown, batch_size=5000)
    refresh_planner_statistics()  # as the items step does after its bulk load
    return study.slug, study.invite_token


def prepare_participants(slug: str, n: int) -> list[dict]:
    """n active participants, each with a first task, as a browser that joined would hold them:
    the signed participant cookie, a CSRF cookie and its token (the closed-loop run's users)."""
    from django.http import HttpResponse
    from django.utils.crypto import get_random_string

    from studies.judgment import assign, flow
    from studies.models import Study
    from studies.views import COOKIE_SALT

    study = Study.objects.get(slug=slug)
    prepared = []
    for _ in range(n):
        participant = flow.join_study(study=study, is_simulated=False)
        participant = flow.record_consent(participant=participant, accepted=True)
        participant = flow.start_tasks(participant=participant)
        assignment = assign.assign_next_item(participant=participant, shown_now=True)
        name, csrf = f"ualign_p{study.pk}", get_random_string(32)
        response = HttpResponse()
        response.set_signed_cookie(name, participant.access_token, salt=COOKIE_SALT)  # what joining sets
        value = response.cookies[name].value
        prepared.append({"cookies": {name: value, "csrftoken": csrf}, "csrf": csrf, "assignment": assignment.pk})
    return prepared


def _wait_for_health(base_url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve-prod exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no /healthz after {timeout}s:\n{log.read_text()[-3000:]}")


ONBOARDING_PAGES = ("onboarding: landing", "onboarding: join", "onboarding: consent",
                    "onboarding: instructions and first task", "onboarding: whole walk")


def stats_prefix(phase: Phase) -> str:
    """The file prefix of a phase's locust CSVs (bench/peers reads them back by it)."""
    return phase.name.replace(" ", "_").replace(",", "")


def _run_locust(phase: Phase, user_class: str, base_url: str, tmp: Path, study: tuple[str, str],
                spawn_rate: int, *, locustfile: Path = LOCUSTFILE, extra_env: dict[str, str] | None = None,
                arrival: str = "spread") -> Phase:
    """One headless locust run of `user_class`; `locustfile` and `extra_env` let bench/peers drive
    other tools with the same profile, read back under the same row names ("pick"). `arrival`:
    "spread", each arriving annotator waits a random fraction of the interval between locust's
    batches of users before starting (the arrivals spread evenly over the burst), or "batched",
    locust's own batches (spawn_rate users at once, every second)."""
    prefix = tmp / stats_prefix(phase)
    ack_file = tmp / f"{prefix.name}_ack.json"
    env = {**os.environ, "BENCH_SLUG": study[0], "BENCH_INVITE": study[1], "BENCH_ACK_FILE": str(ack_file),
           "BENCH_PARTICIPANTS": str(tmp / "participants.json") if user_class == "ClosedLoopAnnotator" else "",
           "BENCH_USERS": str(phase.users) if user_class == "RealisticAnnotator" else "",
           "BENCH_ARRIVAL_SPREAD": str(max(1, math.floor(spawn_rate)) / spawn_rate if arrival == "spread" else 0),
           **(extra_env or {})}
    command = [str(LOCUST), "-f", str(locustfile), "--headless", "--host", base_url, "-u", str(phase.users),
               "-r", str(spawn_rate), "-t", f"{phase.seconds}s", "--stop-timeout", "30",
               "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", user_class]  # fmt: skip
    if user_class != "RealisticAnnotator":  # the realistic run reports its arrival apart instead
        command.insert(-1, "--reset-stats")
    before, wall, phase.started = _cpu_seconds(), time.monotonic(), time.time()
    subprocess.run(command, cwd=ROOT, env=env, check=False, timeout=phase.seconds + 180,
                   stdout=subprocess.DEVNULL, stderr=(tmp / f"{prefix.name}.log").open("w"))  # fmt: skip
    used, wall, phase.ended = _cpu_seconds() - before, time.monotonic() - wall, time.time()
    used["other"] = max(0.0, used.pop("machine") - sum(used.values()))
    phase.cores = {name: round(used[name] / wall, 2) for name in ("locust", "nginx", "gunicorn", "postgres", "other")}
    with open(f"{prefix}_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    name = "healthz" if user_class == "Healthz" else "pick"
    row = rows.get(name, {})
    phase.requests, phase.failures = int(row.get("Request Count", 0)), int(row.get("Failure Count", 0))
    phase.rps = float(row.get("Requests/s", 0))
    with open(f"{prefix}_failures.csv", newline="") as failures:
        for failure in csv.DictReader(failures):
            kind = f"{failure['Method']} {failure['Name']}: {failure['Error']}"
            phase.failure_kinds[kind] = phase.failure_kinds.get(kind, 0) + int(failure["Occurrences"])
    phase.p50, phase.p95, phase.p99 = (float(row.get(q, 0) or 0) for q in ("50%", "95%", "99%"))
    onboarding = rows.get("onboarding: instructions and first task")
    phase.onboarding_p50 = float(onboarding["50%"]) if onboarding else None
    phase.onboarding = {
        page.removeprefix("onboarding: "): {"requests": int(rows[page]["Request Count"]),
                                            "failures": int(rows[page]["Failure Count"]),
                                            "p50": float(rows[page]["50%"] or 0), "p99": float(rows[page]["99%"] or 0)}
        for page in ONBOARDING_PAGES if page in rows
    }  # fmt: skip
    arriving = rows.get("pick (while annotators arrive)")
    if arriving:
        phase.arriving_requests = int(arriving["Request Count"])
        phase.arriving_p50, phase.arriving_p95, phase.arriving_p99 = (float(arriving[q] or 0) for q in ("50%", "95%", "99%"))
    if ack_file.exists():
        counts = json.loads(ack_file.read_text())
        phase.acknowledged, phase.sent, phase.refused = counts["picks"], counts["sent"], counts["failed"]
        phase.joins, phase.walks = counts.get("joins", 0), counts.get("walks", 0)
    return phase


SERVER_PAGES = {("GET", ""): "landing", ("POST", ""): "join", ("POST", "consent/"): "consent",
                ("POST", "instructions/"): "instructions and first task", ("POST", "judgments/"): "pick"}


def _server_side(access_log: Path, phase: Phase, slug: str) -> dict[str, dict[str, float]]:
    """A burst's requests as nginx saw them (its access log, `bench/nginx-ualign.conf`): for each
    onboarding page and for the picks while the annotators arrived and after, how many and the p50
    and p99 of the upstream's time, the gunicorns' share of the latency (their queue and their
    work), without locust's or the proxy's. "While arriving": ended before the burst's last
    instructions' POST did (locust's split is by when each pick was sent; close, not the same)."""
    prefix = f"/s/{slug}/"
    seen: dict[str, list[tuple[float, float]]] = {}
    for line in access_log.read_text().splitlines():
        ended, method, uri, _status, upstream = line.split(" ", 4)
        page = SERVER_PAGES.get((method, uri.removeprefix(prefix))) if uri.startswith(prefix) else None
        if page is None or not phase.started <= float(ended) <= phase.ended or upstream == "-":
            continue
        seen.setdefault(page, []).append((float(ended), 1000 * float(upstream.split(",")[-1])))
    walks_done = max((t for t, _ in seen.get("instructions and first task", [])), default=phase.started)
    picks = seen.pop("pick", [])
    seen["pick while arriving"] = [row for row in picks if row[0] <= walks_done]
    seen["pick after"] = [row for row in picks if row[0] > walks_done]

    def quantile(values: list[float], q: float) -> float:
        return values[max(0, math.ceil(q * len(values)) - 1)]

    return {page: {"requests": len(rows), "p50": quantile(times, 0.5), "p99": quantile(times, 0.99)}
            for page, rows in seen.items() if rows for times in [sorted(ms for _, ms in rows)]}  # fmt: skip


def _cpu_seconds() -> Counter[str]:
    """CPU seconds used so far (user + system) by locust (this process's finished children), by
    gunicorn's processes and by PostgreSQL's, each with its finished children (a recycled worker, a
    closed backend), and by the whole machine (/proc/stat). Differences between two calls give
    what a run used; the PostgreSQL server is this machine's, so its other databases count too."""
    tick = os.sysconf("SC_CLK_TCK")
    used: Counter[str] = Counter()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used["locust"] = children.ru_utime + children.ru_stime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text, command = stat.read_text(), (stat.parent / "cmdline").read_bytes()
        except OSError:  # it exited meanwhile
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        seconds = sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime
        if name == "postgres" or command.startswith(b"postgres"):
            used["postgres"] += seconds
        elif b"gunicorn" in command:
            used["gunicorn"] += seconds
        elif name == "nginx":
            used["nginx"] += seconds
    with open("/proc/stat") as machine:
        jiffies = [int(x) for x in machine.readline().split()[1:]]
    used["machine"] = (sum(jiffies) - jiffies[3] - jiffies[4]) / tick  # all but idle and iowait
    return used


def _check_database(slug: str) -> dict[str, int]:
    """What the database holds after the runs (read after the server stopped)."""
    from django.db import connection
    from django.db.models import Count

    from studies.models import Assignment, Judgment, Study

    judgments = Judgment.objects.filter(assignment__item__study__slug=slug)
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT count(*) FROM studies_comparisonitem i WHERE i.study_id = (SELECT id FROM studies_study
               WHERE slug = %s) AND i.live_assignments <> (SELECT count(*) FROM studies_assignment a
               WHERE a.item_id = i.id AND a.status IN ('assigned', 'completed'))""",
            [slug],
        )  # fmt: skip
        counter_mismatches = cursor.fetchone()[0]
    quota = Study.objects.get(slug=slug).annotations_per_item
    live = Assignment.objects.filter(item__study__slug=slug, status__in=["assigned", "completed"])
    per_item = live.values("item").annotate(n=Count("id"))
    from studies.judgment import seats
    from studies.models import Participant

    study = Study.objects.get(slug=slug)
    return {
        "participants": Participant.objects.filter(study=study).count(),
        "seated": Participant.objects.filter(study=study).seated().count(),
        "seat_counter": seats.taken(study),
        "judgments": judgments.count(),
        "assignments_judged_twice": judgments.count() - judgments.values("assignment").distinct().count(),
        "items_over_quota": per_item.filter(n__gt=quota).count(),
        "counter_mismatches": counter_mismatches,
    }


def _page_cpu(slug: str, invite: str, n: int) -> dict[str, dict[str, float]]:
    """Each onboarding page's CPU, median ms over `n` newcomers walked in this process (after the
    runs, the server stopped): Django's (this process's CPU time) and PostgreSQL's (the CPU time
    of this connection's backend, from /proc), each request through the whole middleware."""
    import statistics
    from http.cookies import SimpleCookie

    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = Path(f"/proc/{cursor.fetchone()[0]}/stat")
    tick = os.sysconf("SC_CLK_TCK")

    def backend_seconds() -> float:
        fields = backend.read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:13]) / tick

    # Each POST answers with the next step's page (no redirect, #26): the join with the consent
    # page, the consent with the instructions, the instructions with the first task.
    pages = [("landing", "get", "join", {"invite": invite}), ("join", "post", "join", {"invite": invite}),
             ("consent", "post", "consent", {"decision": "accept"}),
             ("instructions and first task", "post", "instructions", {})]  # fmt: skip
    spent: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in pages}
    # One client (one handler: a new one loads the middleware, and WhiteNoise's scans the static
    # files, tens of ms that a served worker spends once), a newcomer's empty cookie jar per walk.
    client = Client(HTTP_HOST="127.0.0.1", HTTP_X_FORWARDED_PROTO="https")
    for walk in range(n + 1):  # the first one warms up (templates, URL resolvers): not counted
        client.cookies = SimpleCookie()
        for name, method, view, data in pages:
            python, postgres = time.process_time(), backend_seconds()
            response = getattr(client, method)(reverse(f"studies:{view}", args=[slug]), data, secure=True)
            if walk:
                spent[name].append((time.process_time() - python, backend_seconds() - postgres))
            if response.status_code != 200:
                raise SystemExit(f"page CPU: {name} answered {response.status_code}")
    return {name: {"django_ms": round(1000 * statistics.median(p for p, _ in rows), 2),
                   "postgres_ms": round(1000 * statistics.mean(q for _, q in rows), 2)}
            for name, rows in spent.items()}  # fmt: skip


def _machine() -> str:
    model = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def _onboarding_report(phases: dict[str, Phase], page_cpu: dict[str, dict[str, float]]) -> None:
    """The bursts' onboarding pages: latency under the arrival, and each page's CPU."""
    print("\nonboarding over HTTP during each burst (all its annotators arrive within 10 s):")
    print("| run | page | requests | failures | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|")
    for phase in phases.values():
        for page, row in phase.onboarding.items():
            print(f"| {phase.name} | {page} | {row['requests']:.0f} | {row['failures']:.0f} | {row['p50']:.0f} | "
                  f"{row['p99']:.0f} |")  # fmt: skip
    if page_cpu:
        print("\nCPU per request, each page (in process after the runs; Django median, PostgreSQL mean):")
        print("| page | Django ms | PostgreSQL ms |")
        print("|---|---:|---:|")
        for page, row in page_cpu.items():
            print(f"| {page} | {row['django_ms']:.2f} | {row['postgres_ms']:.2f} |")


def _server_report(bursts: list[Phase]) -> None:
    """Each burst's server-side times (`_server_side`), when nginx was in front."""
    if not any(phase.server for phase in bursts):
        return
    print("\nserver side of each burst (nginx's upstream time: the gunicorns' queue and work, not locust's):")
    print("| run | request | requests | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|")
    for phase in bursts:
        for page, row in phase.server.items():
            print(f"| {phase.name} | {page} | {row['requests']} | {row['p50']:.0f} | {row['p99']:.0f} |")


def _burst_targets(phases: list[Phase]) -> dict[str, bool]:
    """Issue #26: onboarding p99 < 500 ms on every page and pick p99 < 150 ms, arrival included."""
    pages = [row for phase in phases for page, row in phase.onboarding.items() if page != "whole walk"]
    arriving = [phase.arriving_p99 for phase in phases if phase.arriving_requests]
    return {
        "onboarding_page_p99_under_500ms": bool(pages) and all(row["p99"] < 500 for row in pages),
        "pick_p99_while_arriving_under_150ms": bool(arriving) and all(p is not None and p < 150 for p in arriving),
        "pick_p99_after_arrival_under_150ms": all(0 < phase.p99 < 150 for phase in phases),
        "no_onboarding_failures": all(row["failures"] == 0 for row in pages),
    }


def _report(phases: dict[str, Phase], db: dict[str, int], args: argparse.Namespace, load: tuple[float, ...],
            page_cpu: dict[str, dict[str, float]]) -> dict:
    healthz, closed, realistic = phases["healthz"], phases["closed"], phases["realistic"]
    # The bursts are the runs whose annotators arrive together: the realistic run and --burst-users.
    # The closed loop's annotators also onboard (each joins again when its share is done), but under
    # a load that saturates the server by design: their pages are reported, not judged by #26's targets.
    bursts = [phases[name] for name in ("realistic", "burst") if name in phases]
    acknowledged = sum(phase.acknowledged for name, phase in phases.items() if name != "healthz")
    in_flight = sum(p.sent - p.acknowledged - p.refused for name, p in phases.items() if name != "healthz")
    onboarded = [phase for phase in phases.values() if phase.onboarding]  # every run whose annotators joined
    joins = sum(phase.joins for phase in onboarded)
    joined = db["participants"] - args.closed_users  # the closed loop's were prepared server-side
    ratio = closed.rps / healthz.rps if healthz.rps else 0.0
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "load_average_before": load,
        "load_average_after": tuple(round(x, 2) for x in os.getloadavg()),
        "page_cpu_ms": page_cpu,
        "web_concurrency": args.web_concurrency,
        "serve": args.serve,
        "items": args.items,
        "phases": {name: asdict(phase) for name, phase in phases.items()},
        "picks_per_s_over_healthz": round(ratio, 3),
        "acknowledged_picks": acknowledged,
        "picks_in_flight_at_stop": in_flight,
        "database": db,
        "targets": {
            "ratio_at_least_0.30": ratio >= 0.30,
            "realistic_p99_under_150ms": realistic.p99 < 150 and realistic.requests > 0,
            "saved_equals_acknowledged": db["judgments"] == acknowledged,
            "saved_within_acknowledged_plus_in_flight": acknowledged <= db["judgments"] <= acknowledged + in_flight,
            "none_judged_twice": db["assignments_judged_twice"] == 0,
            # Every join answered was saved, and nothing more than the joins in flight when locust stopped.
            "joins_saved": joins <= joined <= joins + sum(phase.users for phase in onboarded),
            "seat_counter_equals_seated_rows": db["seat_counter"] == db["seated"],
            **_burst_targets(bursts),
        },
    }
    print(f"\nmachine: {result['machine']}; load average before: {load}; {result['date']}")
    print("served:", "nginx (bench/nginx-ualign.conf) -> the picks' gunicorn (PICK_BIND) and, nice "
          f"{os.environ.get('PICK_PRIORITY_NICE', '10')}, the other (BIND)" if args.serve == "proxied" else "locust straight to one gunicorn")
    print("| run | users | requests | failures | req/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for phase in phases.values():
        print(f"| {phase.name} | {phase.users} | {phase.requests} | {phase.failures} | {phase.rps:.1f} | "
              f"{phase.p50:.0f} | {phase.p95:.0f} | {phase.p99:.0f} |")  # fmt: skip
    if realistic.arriving_requests:
        print(f"| {realistic.name}, while the {realistic.users} arrive | {realistic.users} | "
              f"{realistic.arriving_requests} | | | {realistic.arriving_p50:.0f} | {realistic.arriving_p95:.0f} | "
              f"{realistic.arriving_p99:.0f} |")  # fmt: skip
    for phase in phases.values():
        for kind, occurrences in phase.failure_kinds.items():
            print(f"failed in {phase.name!r}, {occurrences}x: {kind}")
    print("\ncores busy on average during each run (the machine has", os.cpu_count(), "):")
    print("| run | locust | nginx | gunicorn | PostgreSQL | other | CPU ms per request (all) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for phase in phases.values():
        total = sum(phase.cores.values())
        per_request = 1000 * total / phase.rps if phase.rps else 0.0
        print(f"| {phase.name} | {phase.cores.get('locust', 0):.2f} | {phase.cores.get('nginx', 0):.2f} | "
              f"{phase.cores.get('gunicorn', 0):.2f} | "
              f"{phase.cores.get('postgres', 0):.2f} | {phase.cores.get('other', 0):.2f} | {per_request:.2f} |")
    print(f"\nclosed-loop picks/s ÷ /healthz req/s = {ratio:.2f} (target ≥ 0.30)")
    print(f"realistic pick p99 = {realistic.p99:.0f} ms once all {realistic.users} have started (target < 150 ms); "
          f"while they arrive: {realistic.arriving_p99} ms; onboarding p50 (instructions → first task) = "
          f"{realistic.onboarding_p50} ms")  # fmt: skip
    print(f"picks acknowledged = {acknowledged} (+{in_flight} in flight when locust stopped), judgments saved = "
          f"{db['judgments']}, judged twice = "
          f"{db['assignments_judged_twice']}, items over quota = {db['items_over_quota']}, counter mismatches = "
          f"{db['counter_mismatches']}")  # fmt: skip
    _onboarding_report({name: phase for name, phase in phases.items() if phase.onboarding}, page_cpu)
    _server_report(bursts)
    print(f"joins answered = {joins}, participants joined over HTTP = {joined}, walks to a first task = "
          f"{sum(phase.walks for phase in onboarded)}; seats: counter {db['seat_counter']}, seated rows {db['seated']}")
    print("targets:", result["targets"])
    return result


def main() -> None:
    args = _arguments()
    tmp = Path(tempfile.mkdtemp(prefix="ualign-bench-load-"))
    database_url = f"{args.server_url}/{args.database}"
    port = _free_port()
    env = _server_env(args, database_url, port, tmp)
    _admin_sql(args.server_url, f'CREATE DATABASE "{args.database}"')
    server = proxy = None
    try:
        os.environ.update({k: env[k] for k in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL",
                                               "STATIC_ROOT", "UALIGN_VAR_DIR", "UALIGN_JOIN_LIMIT",
                                               "SECURE_COOKIES")})  # fmt: skip
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")
        sys.path.insert(0, str(ROOT))
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        started = time.monotonic()
        study = build_study(args.items, args.share)
        (tmp / "participants.json").write_text(json.dumps(prepare_participants(study[0], args.closed_users)))
        print(f"built a study of {args.items} items and {args.closed_users} participants in "
              f"{time.monotonic() - started:.0f} s")  # fmt: skip
        from django.db import connections

        connections.close_all()
        log = args.server_log or tmp / "serve-prod.log"
        server = subprocess.Popen([str(ROOT / "scripts" / "serve-prod")], cwd=ROOT, env=env, stdout=log.open("w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        proxy = _start_proxy(tmp, port, env) if "PICK_BIND" in env else None
        _wait_for_health(base_url, server, log)
        load = tuple(round(x, 2) for x in os.getloadavg())
        phases = {
            "healthz": _run_locust(Phase("healthz", 100, args.healthz_seconds), "Healthz", base_url, tmp, study, 100),
            "closed": _run_locust(Phase("picks, closed loop", args.closed_users, args.closed_seconds),
                                  "ClosedLoopAnnotator", base_url, tmp, study, 50),
            "realistic": _run_locust(Phase("picks, 3-8 s think time", args.realistic_users, args.realistic_seconds),
                                     "RealisticAnnotator", base_url, tmp, study, max(1, args.realistic_users // 10),
                                     arrival=args.arrival),
        }  # fmt: skip
        if args.burst_users:
            phases["burst"] = _run_locust(Phase(f"burst of {args.burst_users}, 3-8 s think time", args.burst_users,
                                                args.realistic_seconds), "RealisticAnnotator", base_url, tmp, study,
                                          max(1, args.burst_users // 10), arrival=args.arrival)  # fmt: skip
        _stop(server)
        server = None
        if proxy is not None:
            _stop_proxy(proxy)  # which writes out its access log
            proxy = None
            for name in ("realistic", "burst"):
                if name in phases:
                    phases[name].server = _server_side(tmp / "nginx" / "access.log", phases[name], study[0])
        db = _check_database(study[0])
        page_cpu = _page_cpu(*study, args.page_cpu) if args.page_cpu else {}
        result = _report(phases, db, args, load, page_cpu)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))
    finally:
        if server is not None:
            _stop(server)
        if proxy is not None:
            _stop_proxy(proxy)
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            _admin_sql(args.server_url, f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


def _start_proxy(tmp: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    """nginx on `port`, routing picks to PICK_BIND and the rest to BIND (bench/nginx-ualign.conf)."""
    if not os.access(NGINX, os.X_OK):
        raise SystemExit("--serve proxied needs nginx (make bench-load installs Debian's nginx-light); "
                         "or run with --serve direct")  # fmt: skip
    folder = tmp / "nginx"
    folder.mkdir()
    conf = NGINX_CONF.read_text()
    for name, value in (("DIR", str(folder)), ("PORT", str(port)), ("PAGES", env["BIND"]), ("PICKS", env["PICK_BIND"])):
        conf = conf.replace(f"@{name}@", value)
    (folder / "nginx.conf").write_text(conf)
    return subprocess.Popen([NGINX, "-p", str(folder), "-e", str(folder / "nginx-error.log"), "-c",
                             str(folder / "nginx.conf")], start_new_session=True)  # fmt: skip


def _stop_proxy(proxy: subprocess.Popen) -> None:
    proxy.send_signal(signal.SIGQUIT)  # nginx's graceful shutdown
    try:
        proxy.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proxy.pid, signal.SIGKILL)
        proxy.wait()


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to serve-prod (it stops gunicorn, the worker and beat), then SIGKILL to its group."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


if __name__ == "__main__":
    main()
