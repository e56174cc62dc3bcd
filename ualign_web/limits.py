"""Request body limits, checked on the headers before a byte of the body is read.

Django caps form fields in memory (`DATA_UPLOAD_MAX_MEMORY_SIZE`) but spools file parts of a
multipart body to a temporary file whatever their size, before CSRF or any view runs: an
anonymous 50 MB POST to a participant's page was written to disk before it was refused. gunicorn
limits request lines and headers, not bodies. So this middleware, first in `MIDDLEWARE`, answers:

- 413 when `Content-Length` is above the largest body the site takes anywhere
  (`UALIGN_MAX_REQUEST_BYTES`: the largest upload, `UALIGN_MAX_UPLOAD_BYTES`, plus 1 MiB for the
  multipart envelope and the form's other fields);
- 413 on the anonymous annotator's paths (`/s/...`) above `UALIGN_ANNOTATOR_MAX_REQUEST_BYTES`
  (256 KiB: a pick with the longest rationale, 5,000 characters of 4 bytes each, percent-encoded,
  is about 60 KB, and a somewhat longer one still reaches the form, which says what is wrong);
- 411 for a body without a `Content-Length` (chunked): Django would read it as empty anyway,
  and nothing here sends one;
- 400 for a `Content-Length` that is not a number.

The proxy in front should cap bodies too (docs/deployment.md); this is the app's own guarantee.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

ANNOTATOR_PREFIX = "/s/"


def _refusal(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    response["Connection"] = "close"  # the unread body must not be parsed as the next request
    return response


def body_limit(path: str) -> int:
    """The largest body, in bytes, a request to `path` may carry."""
    if path.startswith(ANNOTATOR_PREFIX):
        return settings.UALIGN_ANNOTATOR_MAX_REQUEST_BYTES
    return settings.UALIGN_MAX_REQUEST_BYTES


class BodyLimitMiddleware:
    """Refuse oversized (or unsized) request bodies from the headers alone."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH", "")
        if not declared:
            if request.META.get("HTTP_TRANSFER_ENCODING"):
                return _refusal(411, "A request body needs a Content-Length.")
            return self.get_response(request)
        if not declared.isascii() or not declared.isdigit():
            return _refusal(400, "The Content-Length header is not a number.")
        limit = body_limit(request.path_info)
        if int(declared) > limit:
            return _refusal(413, f"The request is too large: at most {limit:,} bytes are accepted here.")
        return self.get_response(request)
