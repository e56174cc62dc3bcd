"""Error pages that tell an annotator what happened to their work.

Django renders `templates/404.html`, `400.html`, `403_csrf.html` and `500.html` on its own.
`server_error` (urls.py's handler500) adds one case: when the request failed because the
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
