"""The client address that django-axes counts failed admin logins against.

Behind `UALIGN_TRUSTED_PROXY_HOPS` reverse proxies, REMOTE_ADDR is the proxy's: every client
would share one address, and a stranger's wrong passwords would lock the researcher out. As for
the join limit (`studies.views.client_key`), the address is the one the outermost trusted proxy
saw, counted from the right of X-Forwarded-For; anything further left is the client's own claim.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The address a login attempt comes from (AXES_CLIENT_IP_CALLABLE)."""
    address = request.META.get("REMOTE_ADDR", "")
    hops = settings.UALIGN_TRUSTED_PROXY_HOPS
    if hops:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    return address[:100]
