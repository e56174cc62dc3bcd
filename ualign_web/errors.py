"""Error pages that tell an annotator what happened to their work.

Django renders `templates/404.html`, `400.html`, `403_csrf.html` and `500.html` on its own.
`QueueUnavailableMiddleware` answers a request whose background job could not be queued (the
broker is down) with a 503 that says nothing was started. `server_error` (urls.py's handler500)
adds one case: when the request failed because the
database could not be reached or timed out (connect timeout, statement timeout, connection
refused or dropped), the answer is a 503 with `Retry-After` and the "try again in a minute"
page: every pick acknowledged before was committed, and the next request reconnects. Anything
else is a plain 500 with the same reassurance (a pick is saved in one transaction, so a failed
request saved nothing half-way).
"""

from __future__ import annotations

import sys

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template import loader

# Errors that mean "the database is down or slow", not "this request is wrong".
UNAVAILABLE = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 60


def _database_unavailable(exc: BaseException | None) -> bool:
    """True when the exception, or one it was raised from, says the database is unreachable."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UNAVAILABLE):
            return True
        if isinstance(exc, DatabaseError):
            return False  # an integrity or data error: a bug, not an outage
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: 503 when the database is unavailable, else 500. Renders without the database."""
    if _database_unavailable(sys.exc_info()[1]):
        body = loader.get_template("503.html").render()
        response = HttpResponse(body, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    else:
        response = HttpResponse(loader.get_template("500.html").render(), status=500)
    response["Cache-Control"] = "no-store"
    return response


class QueueUnavailableMiddleware:
    """A request that could not queue its background job (`studies.tasks.QueueUnavailable`: the
    broker is down) gets a 503 that says so, with `Retry-After`; the job was marked "Not started:
    the queue is unreachable" and a preparing study went back to draft, so pressing the button
    again once the broker is back starts it afresh."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # Imported here: studies.tasks imports the models, which the app registry loads after this module.
        from studies.tasks import QueueUnavailable

        if not isinstance(exception, QueueUnavailable):
            return None
        response = HttpResponse(loader.get_template("queue_unavailable.html").render(), status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        response["Cache-Control"] = "no-store"
        return response
