"""Probes for load balancers and orchestrators: `/healthz` (alive) and `/readyz` (can serve).

They are answered by a middleware at the top of the chain, before host validation, the HTTPS
redirect and sessions: a load balancer probes the backend by its own address over plain HTTP,
which ALLOWED_HOSTS and SECURE_SSL_REDIRECT would otherwise turn into a 400 or a 301. Neither
response depends on the request's host or carries anything from it.

- `/healthz` touches nothing (no database, no broker): the process is up and answering.
- `/readyz` checks the database (`SELECT 1`) and the Celery broker (a connection), each with
  `UALIGN_READY_TIMEOUT` seconds, and answers 503 with a one-line reason when either is down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse

from ualign_web.celery import app as celery_app

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


def _probe_response(body: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(body + "\n", status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def _connect_within(timeout: int) -> None:
    """Open the database connection if it is not open, giving up after `timeout` seconds.

    Pages connect with DB_CONNECT_TIMEOUT (5 s by default); a probe must answer within
    UALIGN_READY_TIMEOUT, so this connection attempt (this thread's wrapper only) uses that.
    """
    if connection.connection is not None or connection.vendor != "postgresql":
        return
    original = connection.settings_dict
    connection.settings_dict = {**original, "OPTIONS": {**original.get("OPTIONS", {}), "connect_timeout": timeout}}
    try:
        connection.ensure_connection()
    finally:
        connection.settings_dict = original


def database_problem() -> str | None:
    """None when `SELECT 1` answers within UALIGN_READY_TIMEOUT, else a short reason."""
    try:
        _connect_within(settings.UALIGN_READY_TIMEOUT)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not ready"; the reason is logged in full
        logger.warning("readyz: database check failed: %r", exc)
        connection.close()  # don't keep a broken connection for the next request
        return "database unavailable"
    return None


def broker_problem() -> str | None:
    """None when the Celery broker accepts a connection, else a short reason."""
    timeout = settings.UALIGN_READY_TIMEOUT
    try:
        # socket_timeout: a broker that accepts the connection and then hangs counts as down too.
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        with celery_app.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
            _ = conn.default_channel  # opens a channel: for Redis this sends a command and reads the reply
    except Exception as exc:
        logger.warning("readyz: broker check failed: %r", exc)
        return "broker unavailable"
    return None


def readiness() -> tuple[int, str]:
    problems = [p for p in (database_problem(), broker_problem()) if p]
    if problems:
        return 503, "; ".join(problems)
    return 200, "ready"


class HealthProbeMiddleware:
    """Answer the two probe paths before anything else in the chain runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info.rstrip("/")
        if request.method in ("GET", "HEAD"):
            if path == HEALTH_PATH:
                return _probe_response("ok")
            if path == READY_PATH:
                status, reason = readiness()
                return _probe_response(reason, status)
        return self.get_response(request)
