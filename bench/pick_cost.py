"""Where a pick's time goes, in one process, without HTTP or a load generator (`make bench-pick`; #14).

`make bench-load` measures the served path with locust on the same two cores, which makes its
figures move with everything else the machine does. This one isolates the pick: a throwaway
PostgreSQL database with a live study built as the load benchmark builds it (its planner
statistics refreshed, as the items step leaves them), then PICKS htmx picks, each the full Django
request (middleware, CSRF, the signed participant cookie, the view, the partial) through the WSGI
handler with DEBUG off, spread over 40 participants set up server-side. It reports, per pick: wall time,
this process's CPU (Python, the driver), the PostgreSQL backend's CPU (read from /proc), and the
statements sent; and the same for `/healthz` through the same handler (the baseline of
`make bench-load`, here without HTTP or a load generator), measured in the same run. The picks run
twice, on the same connection: with the hot path's statements sent as plain SQL
(`DB_PREPARED_STATEMENTS` off), then prepared with generic plans (the default; the connection has
`plan_cache_mode=force_generic_plan` either way, which only prepared statements use).

    .venv/bin/python bench/pick_cost.py [--items 20000] [--picks 1000] [--priorities] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import command_line, publish  # noqa: E402

HEADING = "## A pick in one process: Python and PostgreSQL CPU (issue #14)"
ASSIGNMENT = re.compile(rb'name="assignment" value="(\d+)"')


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--picks", type=int, default=1000)
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of docs/benchmarks.md")
    parser.add_argument("--priorities", action="store_true",
                        help="give the items priorities 0-2 as an adaptive allocation would (issue #22; default: all 0)")
    return parser.parse_args()


def _mixed_priorities() -> None:
    """A third of the items at each of priorities 0, 1, 2 (by their shuffle key), as an allocation
    run leaves a study, and the planner's statistics refreshed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE studies_comparisonitem SET priority = spread % 3 WHERE NOT is_attention_check")
        cursor.execute("ANALYZE studies_comparisonitem")


class Picker:
    """Picks through the WSGI handler as a browser with htmx sends them."""

    def __init__(self, slug: str, people: list[dict]) -> None:
        from django.core.wsgi import get_wsgi_application

        self.app, self.slug, self.people = get_wsgi_application(), slug, people

    def get(self, path: str) -> None:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "443",
                   "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "https", "SERVER_PROTOCOL": "HTTP/1.1",
                   "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr}  # fmt: skip
        status: list[str] = []
        b"".join(self.app(environ, lambda s, _headers: status.append(s)))
        if not status[0].startswith("200"):
            raise SystemExit(f"{path} answered {status[0]}")

    def pick(self, person: dict) -> None:
        body = f"assignment={person['assignment']}&choice=1".encode()
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": f"/s/{self.slug}/judgments/", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "443", "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "https", "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "HTTP_COOKIE": "; ".join(f"{k}={v}" for k, v in person["cookies"].items()),
            "HTTP_X_CSRFTOKEN": person["csrf"], "HTTP_HX_REQUEST": "true", "HTTP_ORIGIN": "https://127.0.0.1",
            "HTTP_REFERER": f"https://127.0.0.1/s/{self.slug}/task/",
        }  # fmt: skip
        status: list[str] = []
        html = b"".join(self.app(environ, lambda s, _headers: status.append(s)))
        if not status[0].startswith("200"):
            raise SystemExit(f"a pick answered {status[0]}: {html[:300]!r}")
        match = ASSIGNMENT.search(html)
        person["assignment"] = match.group(1).decode() if match else None

    def run(self, n: int) -> int:
        done = 0
        for i in range(n * 2):
            person = self.people[i % len(self.people)]
            if person["assignment"] is not None:
                self.pick(person)
                done += 1
                if done == n:
                    break
        return done


def _backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one PostgreSQL backend, from /proc (same machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(slug: str, picks: int) -> dict[str, dict[str, float]]:
    """Per request, for /healthz and for a pick: wall ms, Python CPU ms, PostgreSQL CPU ms, statements."""
    from django.conf import settings
    from django.db import connection
    from load_annotate import prepare_participants

    picker = Picker(slug, prepare_participants(slug, 80))
    picker.run(40)  # warm: imports, templates, the connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    def timed(run) -> dict[str, float]:
        nonlocal statements
        statements = 0
        backend_before, cpu, wall = _backend_cpu(backend), time.process_time(), time.perf_counter()
        with connection.execute_wrapper(count):
            n = run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"requests": n, "wall_ms": 1000 * wall / n, "python_ms": 1000 * cpu / n,
                "postgres_ms": 1000 * (_backend_cpu(backend) - backend_before) / n, "statements": statements / n}  # fmt: skip

    def get(path: str, n: int) -> Callable[[], int]:
        def run() -> int:
            for _ in range(n):
                picker.get(path)
            return n

        return run

    picker.get("/")  # warm its template
    figures = {"healthz": timed(get("/healthz", picks * 5)), "home": timed(get("/", picks))}
    for name, prepared in (("pick, plain SQL", False), ("pick", True)):
        settings.UALIGN_PREPARED_STATEMENTS = prepared
        picker.run(20)  # warm this way of sending them
        figures[name] = timed(lambda: picker.run(picks))
    return figures


def main() -> None:
    args = _arguments()
    database = f"ualign_bench_pick_{os.getpid()}"
    from load_annotate import _admin_sql, build_study

    # One connection for the whole run: its backend's CPU is read from /proc, and a connection
    # recycled by age (60 s is quickly reached on a busy machine) would take its process with it.
    os.environ.update({
        "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"{args.server_url}/{database}", "DB_CONN_MAX_AGE": "86400", "UALIGN_JOIN_LIMIT": "0",
        "SECURE_COOKIES": "false", "STATIC_ROOT": str(ROOT / "var" / "bench-static"),
        "DJANGO_SETTINGS_MODULE": "ualign_web.settings",
    })  # fmt: skip
    _admin_sql(args.server_url, f'CREATE DATABASE "{database}"')
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        slug, _invite = build_study(args.items, 50)
        if args.priorities:
            _mixed_priorities()
        load = tuple(round(x, 2) for x in os.getloadavg())
        figures = measure(slug, args.picks)
        from django.db import connections

        connections.close_all()
    finally:
        _admin_sql(args.server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    publish(_section(args, figures, load), HEADING, args.write)


def _section(args: argparse.Namespace, figures: dict, load: tuple) -> str:
    healthz, home, plain, pick = figures["healthz"], figures["home"], figures["pick, plain SQL"], figures["pick"]
    rows = [("wall time", "wall_ms", "ms"), ("Python CPU (this process)", "python_ms", "ms"),
            ("PostgreSQL backend CPU", "postgres_ms", "ms"), ("statements sent", "statements", "")]  # fmt: skip
    table = ["| per request | `/healthz` (baseline) | `/` (a template, no query) | pick, plain SQL "
             "| pick, prepared (default) | pick ÷ `/healthz` | prepared ÷ plain |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, key, unit in rows:
        ratio = f"{pick[key] / healthz[key]:.0f}×" if healthz[key] else "—"
        gain = f"{pick[key] / plain[key]:.2f}×" if plain[key] else "—"
        table.append(f"| {label} | {healthz[key]:.3f} {unit} | {home[key]:.2f} {unit} | {plain[key]:.2f} {unit} "
                     f"| {pick[key]:.2f} {unit} | {ratio} | {gain} |")  # fmt: skip
    cpu = platform.processor() or platform.machine()
    return "\n".join([
        HEADING,
        "",
        f"- **Command:** `{command_line('bench/pick_cost.py', None)}`",
        f"- **Machine:** {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, load average "
        f"before {load}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Setup:** a live study of {args.items:,} two-text items (+ attention checks"
        f"{'; a third each at priority 0, 1 and 2' if args.priorities else ''}), {pick['requests']} htmx "
        f"picks each way over 80 participants, {healthz['requests']} `/healthz` and {home['requests']} `/` requests (the "
        "site's front page: Django's middleware and a template, no query), each the full request through "
        "Django's WSGI handler with DEBUG off, no HTTP server; PostgreSQL on the same machine, its backend's CPU "
        "read from /proc.",
        "",
        *table,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
