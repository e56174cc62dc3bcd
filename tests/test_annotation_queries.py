"""The annotator's path costs the same at 200 items and at 50,000 (issue #14).

Two live studies, built with bulk_create as the items step leaves them (each candidate's Markdown
rendered): a small one and a large one whose items are a third taken by earlier annotators. A newcomer walks each from the landing page to several picks; every
step is counted with CaptureQueriesContext, must stay within 11 SQL statements (transaction
control aside: BEGIN, COMMIT and savepoints touch no table) and must cost the same in both studies. On the large one, every query of the walk, re-run under EXPLAIN ANALYZE, reads a
few pages, not the study's thousand (updates and inserts go by primary key).
"""

from __future__ import annotations

import re

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from studies.models import (
    ComparisonItem,
    Judgment,
    Participant,
    Study,
)
from tests.bulk import TRANSACTION_CONTROL, bulk_study

# Transactions as in production (no test-wide transaction, so no SAVEPOINT queries in the counts).
pytestmark = pytest.mark.django_db(transaction=True)

HX = {"HX-Request": "true"}
# 10 in #14; plus one, on a pick: the UPDATE of the participant's last_active_at (#12 part A: the
# sweep times out idle participants), by primary key on the row the pick already holds locked. No
# other statement of the pick writes that row, so it can't be folded into one (on a failed attention
# check it is the same UPDATE).
MAX_QUERIES = 11
PICKS = 6
# Counting what is left of a participant's share reads a few pages per item of it (20 here).
MAX_PAGES = 100


def walk(study: Study) -> dict[str, list[tuple[str, tuple]]]:
    """A newcomer's walk from the landing page to PICKS picks: each step's SQL and parameters.

    Counted with CaptureQueriesContext (Django's query log), and recorded with their parameters by
    an execute wrapper, to re-run each with the same parameters under EXPLAIN."""
    client = Client()
    steps: dict[str, list[tuple[str, tuple]]] = {}

    def step(name: str, method: str, view: str, data: dict | None = None, **headers) -> str:
        url = reverse(f"studies:{view}", args=[study.slug])
        statements: list[tuple[str, tuple]] = []

        def record(execute, sql, params, many, context):
            statements.append((sql, tuple(params or ())))
            return execute(sql, params, many, context)

        with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(record):
            if method == "get":
                response = client.get(url, data, headers=headers)
            else:
                response = client.post(url, data or {}, headers=headers)
        assert response.status_code in (200, 302), (name, response.status_code)
        steps[name] = [(sql, params) for sql, params in statements if not sql.startswith(TRANSACTION_CONTROL)]
        counted = [q for q in queries.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)]
        assert len(counted) == len(steps[name]), (name, counted)  # the query log saw them all
        return response.content.decode()

    step("landing", "get", "join", {"invite": study.invite_token})
    step("join", "post", "join", {"invite": study.invite_token})
    step("consent page", "get", "consent")
    step("consent", "post", "consent", {"decision": "accept"})
    html = step("instructions and first task", "post", "instructions")  # the task in the answer (#26)
    for n in range(PICKS):
        assignment = re.search(r'name="assignment" value="(\d+)"', html).group(1)
        html = step(f"pick {n + 1}", "post", "submit_judgment", {"assignment": assignment, "choice": "1"}, **HX)
    step("task page reloaded", "get", "task")
    return steps


def test_every_step_of_the_annotators_path_costs_the_same_few_queries_at_200_and_50000_items():
    small, large = bulk_study(200), bulk_study(50_000, taken_share=1 / 3)
    costs_small = {name: len(sql) for name, sql in walk(small).items()}
    costs_large = {name: len(sql) for name, sql in walk(large).items()}
    assert costs_small == costs_large
    over = {name: n for name, n in costs_large.items() if n > MAX_QUERIES}
    assert not over, costs_large
    # The picks went where the counters say: each an item that had room, judged once.
    participant = Participant.objects.filter(study=large, external_id="").latest("id")
    assert Judgment.objects.filter(assignment__participant=participant).count() == PICKS
    for item in ComparisonItem.objects.filter(assignments__participant=participant):
        assert item.live_assignments == item.assignments.filter(status__in=["assigned", "completed"]).count()


def _blocks_read(sql: str, params: tuple) -> int:
    """Pages (8 KiB) of tables and indexes that PostgreSQL touches running `sql` (EXPLAIN ANALYZE,
    BUFFERS), rolled back so that the walk's data stay as they were."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0][0]["Plan"]
        transaction.set_rollback(True)
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


def test_no_query_of_the_annotators_path_reads_more_than_a_few_pages_of_a_50000_item_study():
    """A whole-study scan of a 50,000-item study reads its ~1,000 pages of items or shown texts;
    every query of the walk, re-run with EXPLAIN ANALYZE, reads a few dozen (at most MAX_PAGES)."""
    large = bulk_study(50_000, taken_share=1 / 3)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('studies_comparisonitem') / 8192")
        assert cursor.fetchone()[0] > 5 * MAX_PAGES  # a scan of the items would show
    reads = {}
    for name, queries in walk(large).items():
        for sql, params in queries:
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                reads[(name, sql[:200])] = _blocks_read(sql, params)
    heavy = {key: blocks for key, blocks in reads.items() if blocks > MAX_PAGES}
    assert not heavy, heavy


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's")
def test_the_annotators_statements_are_planned_once_per_connection_not_once_per_pick():
    """On PostgreSQL the hot path's statements are prepared on the connection and run their
    generic plans (studies/judgment/sql.py): planning was most of their PostgreSQL CPU."""
    walk(bulk_study(200))
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        prepared = cursor.fetchall()
    by_kind = {
        "the locked read of a pick": [row for row in prepared if "FOR NO KEY UPDATE OF a, p" in row[0]],
        "the claim of the next task": [row for row in prepared if row[0].startswith("WITH claimed")],
        "the judgment's insert": [row for row in prepared if row[0].startswith('INSERT INTO "studies_judgment"')],
    }
    for kind, rows in by_kind.items():
        assert rows, kind
        assert sum(generic for _, generic, _ in rows) >= 1, kind
    assert [row for row in prepared if row[2]] == []  # no statement planned afresh for its values
    picks = sum(generic + custom for _, generic, custom in by_kind["the locked read of a pick"])
    assert picks == PICKS
