"""Django's PostgreSQL backend, plus cursors whose statements psycopg prepares (`ENGINE` for PostgreSQL).

The annotator's hot path (studies/judgment/sql.py) sends a handful of statements per pick. Planned
afresh at each call, planning was most of the PostgreSQL CPU a pick cost; prepared on the
connection and run with their generic plans (`plan_cache_mode=force_generic_plan`, settings.py),
each is planned once per connection. Django's cursors bind parameters on the client, which
psycopg never prepares; so this backend adds `preparing_cursor()`: Django's cursor (its wrapper,
query log, execute wrappers and error translation, its time-zone handling) around psycopg's
server-binding cursor, which prepares every statement it runs. Every other cursor, and so the
whole ORM, is Django's own.

It also checks a kept connection's health without a round trip when the connection is idle
(`DatabaseWrapper.is_usable`), instead of Django's `SELECT 1` before every request.

Only documented extension points: a backend module whose `DatabaseWrapper` subclasses Django's
(https://docs.djangoproject.com/en/5.2/ref/databases/#subclassing-the-built-in-database-backends),
psycopg's `Connection.cursor_factory`, and `Cursor.execute(prepare=True)`
(https://www.psycopg.org/psycopg3/docs/advanced/prepare.html).
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.db.backends.postgresql import base, operations
from django.db.backends.utils import CursorWrapper
from psycopg import pq


class PreparingCursor(psycopg.Cursor):
    """psycopg's server-side binding cursor, each statement prepared on the connection on first use."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None) -> Any:
        return super().execute(query, params, prepare=True, binary=binary)


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str:
        """A prepared statement's SQL with its values, for the query log (DEBUG,
        CaptureQueriesContext): composed as Django composes it for server-side binding."""
        if isinstance(cursor, PreparingCursor):
            return self.compose_sql(sql, params)
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    preparing = False  # while `preparing_cursor` asks `create_cursor` for a preparing cursor

    def is_usable(self) -> bool:
        """Whether a kept connection can serve the next request, without a round trip when it is idle.

        With CONN_HEALTH_CHECKS, Django checks a reused connection before each request's first
        query by sending `SELECT 1`: a round trip per request, during which a sync web worker can
        serve no one (#26 measured it at an eighth of a worker's time on the annotator's pages).
        An idle connection has nothing to read: when its server goes away (a restart, a backend
        terminated, a pooler closing it), the socket turns readable (end of file, or the server's
        last message). So a connection libpq knows is bad is not usable; an idle one with
        nothing to read is; anything else (something to read, a transaction left open) is
        decided by Django's own `SELECT 1`, which fails on a dead connection.
        """
        if self.connection is None:
            return False
        info = self.connection.info
        if self.connection.closed or info.status != pq.ConnStatus.OK:
            return False
        if info.transaction_status == pq.TransactionStatus.IDLE:
            try:
                readable, _, _ = select.select([self.connection.fileno()], [], [], 0)
            except (OSError, ValueError):
                return False
            if not readable:
                return True
        return super().is_usable()

    def preparing_cursor(self) -> CursorWrapper:
        """`cursor()`, around a psycopg cursor that prepares its statements."""
        self.preparing = True
        try:
            return self.cursor()
        finally:
            self.preparing = False

    def create_cursor(self, name: str | None = None) -> Any:
        if name or not self.preparing:
            return super().create_cursor(name)
        factory = self.connection.cursor_factory
        self.connection.cursor_factory = PreparingCursor
        try:
            return super().create_cursor(name)
        finally:
            self.connection.cursor_factory = factory
