"""The results page at 1,000,000 judgments: served from its snapshot, against today's full recompute.

Builds a throwaway database with the judgments of bench/bench_export.py (generate_series inserts;
default 1,000,000), then, in the same run:

1. `compute_results` over all of them: what the page and its 5-second poll did on every request
   before issue #14 (best of --repeat);
2. the refresh job (`studies.tasks.refresh_results`): the same computation, stored as the snapshot;
3. the results page and its htmx poll with a current snapshot (median and worst of --requests);
4. the poll after a batch of new judgments: the last snapshot, the count of what is new and one
   recomputation queued (to an in-memory broker here; no worker runs it).

Target: the page and its poll answer in under 2 s at 1,000,000 judgments.

    .venv/bin/python bench/bench_results.py [--judgments 1000000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_export import admin_sql, build  # noqa: E402  (after the path above)

SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
NEW_BATCH = 500


def setup_django(database: str) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER}/{database}"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["CELERY_BROKER_URL"] = "memory://"  # queued refreshes go nowhere: this run times the request
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")
    import django

    django.setup()


def timed(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def add_new_judgments(study, n: int) -> None:
    """n more judgments of the study (new assignments of existing items), as picks would add them."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            """WITH picked AS (
                   SELECT i.id AS item_id, p.id AS participant_id, ic.id AS shown_id, row_number() OVER () AS n
                     FROM studies_comparisonitem i
                     JOIN LATERAL (SELECT id FROM studies_itemcandidate WHERE item_id = i.id ORDER BY slot LIMIT 1) ic
                       ON true
                     JOIN LATERAL (SELECT id FROM studies_participant WHERE study_id = %s
                                    AND id NOT IN (SELECT participant_id FROM studies_assignment WHERE item_id = i.id)
                                    LIMIT 1) p ON true
                    WHERE i.study_id = %s ORDER BY i.id LIMIT %s),
               made AS (
                   INSERT INTO studies_assignment (participant_id, item_id, status, display_order, assigned_at,
                                                   rendered_at, completed_at)
                   SELECT participant_id, item_id, 'completed', jsonb_build_array(shown_id), now(), now(), now()
                     FROM picked RETURNING id, display_order)
               INSERT INTO studies_judgment (assignment_id, chosen_id, chosen_slot, cant_decide, credit, rationale,
                                             latency_ms, rendered_at, created_at)
               SELECT id, (display_order ->> 0)::bigint, 1, false, 1.0, '', 1200, now(), now() FROM made""",
            [study.pk, study.pk, n],
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--database", default=f"ualign_bench_results_{os.getpid()}")
    parser.add_argument("--repeat", type=int, default=2, help="full recomputes to time (best of)")
    parser.add_argument("--requests", type=int, default=10, help="page and poll requests to time")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    admin_sql(f'CREATE DATABASE "{args.database}"')
    try:
        setup_django(args.database)
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            admin_sql(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


def run(args: argparse.Namespace) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from studies import tasks
    from studies.estimate.results import compute_results
    from studies.models import Study

    start = time.perf_counter()
    study = build(args.judgments)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.LIVE)
    study.refresh_from_db()
    print(f"built {args.judgments:,} judgments in {time.perf_counter() - start:.0f} s")
    full = timed(lambda: compute_results(study), args.repeat)
    refresh = timed(lambda: tasks.refresh_results(study.pk, "real"), 1)
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("bench", password="x"))
    url = reverse("studies:results", args=[study.slug])

    def get(**headers) -> None:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        assert b"up to date" in response.content or b"since" in response.content

    page = timed(get, args.requests)
    poll = timed(lambda: get(**{"HX-Request": "true"}), args.requests)
    add_new_judgments(study, NEW_BATCH)
    stale = timed(lambda: get(**{"HX-Request": "true"}), args.requests)
    assert f"{NEW_BATCH} new judgments since".encode() in client.get(url, headers={"HX-Request": "true"}).content
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}, "
          f"PostgreSQL {connection.pg_version}; load average {os.getloadavg()}")  # fmt: skip
    print("| what | seconds |")
    print("|---|---:|")
    print(f"| full recompute, `compute_results` (before: every page load and poll), best of {args.repeat} | "
          f"{min(full):.2f} |")  # fmt: skip
    print(f"| the refresh job (compute + store the snapshot) | {refresh[0]:.2f} |")
    for label, times in (("results page, snapshot current", page), ("5-second poll (htmx), snapshot current", poll),
                         (f"poll after {NEW_BATCH} new judgments (snapshot + count + queue)", stale)):  # fmt: skip
        print(f"| {label}: median / worst of {len(times)} | {statistics.median(times):.3f} / {max(times):.3f} |")
    worst = max(page + poll + stale)
    print(f"\ntarget: page and poll under 2 s at {args.judgments:,} judgments: {'met' if worst < 2 else 'NOT met'} "
          f"(worst {worst:.3f} s; the full recompute took {min(full):.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
