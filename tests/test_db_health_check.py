"""The kept connection's health check (ualign_web/db_backend: `DatabaseWrapper.is_usable`), on the
real PostgreSQL: an idle, healthy connection is judged usable without a round trip; one whose
backend the server terminated (as a restart or a pooler does) is judged unusable, and Django then
opens a fresh one, so the request that follows is served instead of failing."""

from __future__ import annotations

import time
from unittest import mock

import psycopg
import pytest
from django.db import connection, connections

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def kept():
    """A second connection to the test database, as a web worker keeps one between requests."""
    wrapper = connections.create_connection("default")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def test_an_idle_healthy_connection_is_usable_without_a_statement(kept):
    with mock.patch.object(psycopg.Connection, "cursor", side_effect=AssertionError("a round trip")):
        assert kept.is_usable()
    with kept.cursor() as cursor:  # and it still works
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_terminated_backend_is_unusable_and_the_next_request_reconnects(kept):
    pid = kept.connection.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone() == (True,)
    deadline = time.monotonic() + 10
    while kept.is_usable():  # the server's FATAL message and end of file arrive soon after
        assert time.monotonic() < deadline, "a terminated backend still looked usable after 10 s"
        time.sleep(0.05)
    # What Django does at the start of a request with CONN_HEALTH_CHECKS: close the unusable one…
    kept.health_check_enabled, kept.health_check_done = True, False
    kept.close_if_health_check_failed()
    assert kept.connection is None
    with kept.cursor() as cursor:  # …and the request's first query opens a new one
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_a_connection_inside_a_transaction_is_checked_by_the_server(kept):
    """Not idle (a transaction left open): Django's own SELECT 1 decides."""
    kept.connection.execute("BEGIN")
    with mock.patch.object(psycopg.Connection, "cursor", wraps=kept.connection.cursor) as cursor:
        assert kept.is_usable()
        assert cursor.called
    kept.connection.execute("ROLLBACK")
