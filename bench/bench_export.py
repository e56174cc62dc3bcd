"""Export 1,000,000 judgments as CSV against PostgreSQL's own COPY, in the same run (issue #6).

Target: within 2x the time of `COPY (query) TO STDOUT WITH CSV` producing the same columns
(the shown candidates aggregated from display_order in SQL; JIT off, which only slowed it),
with flat memory. Builds a throwaway database (default ualign_bench) with generate_series,
runs both, and drops it (unless --keep).

    .venv/bin/python bench/bench_export.py [--judgments 1000000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
PER_ITEM = 10  # annotations per item
PROMPTS, PEOPLE = 1000, 5000

COPY_QUERY = """
WITH shown AS (
    SELECT a.id AS assignment_id, string_agg(ic.candidate_id || ':' || o.pos, ';' ORDER BY o.pos) AS shown
      FROM studies_assignment a
      JOIN studies_comparisonitem i ON i.id = a.item_id
     CROSS JOIN LATERAL jsonb_array_elements_text(a.display_order) WITH ORDINALITY AS o(ic_id, pos)
      JOIN studies_itemcandidate ic ON ic.id = o.ic_id::bigint
     WHERE i.study_id = %(study)s
     GROUP BY a.id
)
SELECT s.slug, j.id, i.prompt_id, p.external_id, i.id, i.is_attention_check, pol.name, i.k, i.opponent_label,
       i.m, i.replicate, sh.shown, ch.candidate_id, j.chosen_slot, ch.count_policy, ch.count_opponent, j.credit,
       j.cant_decide, j.attention_passed, pa.pseudonym, pa.is_simulated, j.latency_ms, j.rendered_at,
       j.created_at, j.rationale
  FROM studies_judgment j
  JOIN studies_assignment a ON a.id = j.assignment_id
  JOIN studies_comparisonitem i ON i.id = a.item_id
  JOIN studies_study s ON s.id = i.study_id
  JOIN studies_prompt p ON p.id = i.prompt_id
  LEFT JOIN studies_policy pol ON pol.id = i.policy_id
  LEFT JOIN studies_itemcandidate ch ON ch.id = j.chosen_id
  JOIN studies_participant pa ON pa.id = a.participant_id
  LEFT JOIN shown sh ON sh.assignment_id = a.id
 WHERE i.study_id = %(study)s
 ORDER BY i.id, j.id
"""


def setup_django(database: str) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")
    import django

    django.setup()


def admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def build(n_judgments: int):
    from django.core.management import call_command
    from django.db import connection

    from studies.models import GeneratorModel, Participant, Policy, Prompt, Study

    call_command("migrate", verbosity=0)
    study = Study.objects.create(slug="bench", title="Bench", consent_text="ok", k_values=[2])
    generator = GeneratorModel.objects.create(name="bench-gen", model_ref="x")
    policy = Policy.objects.create(study=study, name="alpha", kind="sample")
    Prompt.objects.bulk_create(Prompt(study=study, text=f"prompt {i}", external_id=f"p{i}") for i in range(PROMPTS))
    Participant.objects.bulk_create(
        Participant(study=study, pseudonym=f"p-{i:012x}", access_token=f"token-{i}") for i in range(PEOPLE)
    )
    n_items = n_judgments // PER_ITEM
    with connection.cursor() as cur:
        cur.execute("SELECT min(id) FROM studies_prompt WHERE study_id = %s", [study.pk])
        prompt0 = cur.fetchone()[0]
        cur.execute("SELECT min(id) FROM studies_participant WHERE study_id = %s", [study.pk])
        person0 = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO studies_candidate (prompt_id, generator_id, sample_index, text, text_sha256, multiplicity,
                   token_count, metadata, is_attention_check, text_html, created_at)
               SELECT %s + g / 3, %s, g %% 3, 'response ' || g, md5(g::text), 1, 5, '{}', false, '', now()
                 FROM generate_series(0, %s - 1) g""",
            [prompt0, generator.pk, 3 * PROMPTS],
        )
        cur.execute("SELECT min(id) FROM studies_candidate")
        cand0 = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO studies_comparisonitem (study_id, prompt_id, policy_id, k, opponent_label, m, replicate,
                   is_attention_check, needs_judgment, predicted_win_rate, draw, live_assignments, rotation_use, spread,
                   created_at)
               SELECT %s, %s + g %% %s, %s, 2, 'adversary', 1, g / %s, false, true, 0.7, '{}', %s, '{}',
                      (random() * 2147483647)::int, now()
                 FROM generate_series(0, %s - 1) g""",
            [study.pk, prompt0, PROMPTS, policy.pk, PROMPTS, PER_ITEM, n_items],
        )
        cur.execute("SELECT min(id) FROM studies_comparisonitem")
        item0 = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO studies_itemcandidate (item_id, candidate_id, slot, count_policy, count_opponent)
               SELECT %s + g / 3, %s + 3 * ((g / 3) %% %s) + g %% 3, g %% 3,
                      (ARRAY[1, 1, 0])[g %% 3 + 1], (ARRAY[1, 0, 1])[g %% 3 + 1]
                 FROM generate_series(0, 3 * %s - 1) g""",
            [item0, cand0, PROMPTS, n_items],
        )
        cur.execute("SELECT min(id) FROM studies_itemcandidate")
        ic0 = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO studies_assignment (participant_id, item_id, status, display_order, assigned_at,
                   rendered_at, completed_at)
               SELECT %s + (g %% %s) * %s + (g / %s) %% %s, %s + g / %s, 'completed',
                      jsonb_build_array(%s + 3 * (g / %s) + 2, %s + 3 * (g / %s), %s + 3 * (g / %s) + 1),
                      now(), now(), now()
                 FROM generate_series(0, %s - 1) g""",
            [person0, PER_ITEM, PEOPLE // PER_ITEM, PER_ITEM, PEOPLE // PER_ITEM, item0, PER_ITEM,
             ic0, PER_ITEM, ic0, PER_ITEM, ic0, PER_ITEM, n_items * PER_ITEM],
        )
        cur.execute("SELECT min(id) FROM studies_assignment")
        a0 = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO studies_judgment (assignment_id, chosen_id, chosen_slot, cant_decide, credit,
                   attention_passed, rationale, latency_ms, rendered_at, created_at)
               SELECT %s + g, %s + 3 * (g / %s) + g %% 3, (ARRAY[2, 3, 1])[g %% 3 + 1], false,
                      (ARRAY[0.5, 1.0, 0.0])[g %% 3 + 1], NULL, '', 1000 + g %% 5000,
                      now() - interval '20 seconds', now()
                 FROM generate_series(0, %s - 1) g""",
            [a0, ic0, PER_ITEM, n_items * PER_ITEM],
        )
        cur.execute("ANALYZE")
    return study


def run_copy(study) -> tuple[float, int]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SET jit = off")  # JIT compilation only slowed this query down: give COPY its best
    start, size = time.perf_counter(), 0
    with connection.cursor() as cur, cur.connection.cursor().copy(
        f"COPY ({COPY_QUERY}) TO STDOUT WITH CSV HEADER".replace("%(study)s", str(int(study.pk)))
    ) as copy:
        for block in copy:
            size += len(block)
    return time.perf_counter() - start, size


def run_export(study, *, trace: bool = False) -> tuple[float, int, list[int]]:
    from studies.estimate import export

    peaks = []
    if trace:
        tracemalloc.start()
    start, size = time.perf_counter(), 0
    for chunks, chunk in enumerate(export.iter_csv(study, "judgments"), 1):
        size += len(chunk.encode())
        if trace and chunks in (100, 500):  # 1,000 rows a chunk: after 100k and 500k rows
            peaks.append(tracemalloc.get_traced_memory()[1])
    elapsed = time.perf_counter() - start
    if trace:
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return elapsed, size, peaks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--database", default="ualign_bench")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    admin_sql(f'DROP DATABASE IF EXISTS "{args.database}"')
    admin_sql(f'CREATE DATABASE "{args.database}"')
    try:
        setup_django(args.database)
        from django.db import connection

        start = time.perf_counter()
        study = build(args.judgments)
        print(f"built {args.judgments:,} judgments in {time.perf_counter() - start:.1f} s")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        copy_time, copy_bytes = run_copy(study)
        ours, our_bytes, _ = run_export(study)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        copy_time2, _ = run_copy(study)
        ours2, _, _ = run_export(study)
        _, _, peaks = run_export(study, trace=True)
        copy_best, ours_best = min(copy_time, copy_time2), min(ours, ours2)
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"PostgreSQL {connection.pg_version}")
        print(f"COPY (query) TO STDOUT WITH CSV (baseline): {copy_best:.2f} s, {copy_bytes / 1e6:.1f} MB  (1.00x)")
        print(f"studies.estimate.export.iter_csv judgments:         {ours_best:.2f} s, {our_bytes / 1e6:.1f} MB  "
              f"({ours_best / copy_best:.2f}x)")
        print(f"peak RSS growth over the first export: {(rss1 - rss0) / 1024:.1f} MiB")
        print("tracemalloc peak after 100k / 500k / all rows: " + " / ".join(f"{p / 2**20:.2f} MiB" for p in peaks))
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            admin_sql(f'DROP DATABASE IF EXISTS "{args.database}"')


if __name__ == "__main__":
    main()
