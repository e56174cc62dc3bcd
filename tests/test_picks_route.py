"""The proxy's route for the picks (docs/deployment.md, "Picks first"; bench/nginx-ualign.conf).

With `PICK_BIND`, serve-prod gives the picks a gunicorn of their own; the proxy must send them
there, and nothing else. The route is a regular expression over paths, written in two places: it
is checked here against the site's own URLs, and nginx itself is run with the bench's file (when
nginx is installed: `make bench-load` installs Debian's nginx-light) in front of two stand-ins
for the gunicorns.
"""

from __future__ import annotations

import http.server
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.urls import reverse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import load_annotate  # noqa: E402

PICKS_ROUTE = re.compile(r"location ~ (\S+) \{[^}]*proxy_pass http://ualign_picks;")
SLUGS = ["s", "bench-load", "my_study-2", "A1"]


def _routes(path: Path) -> list[str]:
    return PICKS_ROUTE.findall(path.read_text())


def test_the_deployment_guide_and_the_bench_route_the_same_picks():
    guide, bench = _routes(ROOT / "docs" / "deployment.md"), _routes(load_annotate.NGINX_CONF)
    assert len(bench) == 1
    assert guide == bench


def _other_pages(slug: str) -> list[str]:
    pages = [reverse(f"studies:{name}", args=[slug])
             for name in ("join", "consent", "instructions", "task", "done", "return_study", "preview")]  # fmt: skip
    return [*pages, reverse("studies:resume", args=[slug, "t0ken"]), reverse("studies:preview_step", args=[slug, "task"]),
            reverse("studies:results", args=[slug]), "/healthz", "/admin/", "/static/ualign/annotate.js"]  # fmt: skip


@pytest.mark.parametrize("slug", SLUGS)
def test_the_route_takes_the_pick_and_no_other_page(slug):
    (route,) = _routes(load_annotate.NGINX_CONF)
    picks = re.compile(route)  # a plain regular expression: PCRE (nginx) and Python read it alike
    assert picks.search(reverse("studies:submit_judgment", args=[slug]))
    assert [page for page in _other_pages(slug) if picks.search(page)] == []


class _StandIn(http.server.ThreadingHTTPServer):
    """A gunicorn's stand-in: answers every request with its own name."""

    def __init__(self, name: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _ask(url: str, method: str) -> str:
    request = urllib.request.Request(url, data=b"choice=1" if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


@pytest.mark.skipif(not os.access(load_annotate.NGINX, os.X_OK), reason="nginx is not installed (make bench-load installs it)")
def test_nginx_sends_the_pick_to_the_picks_gunicorn_and_everything_else_to_the_other(tmp_path):
    pages, picks = _StandIn("pages"), _StandIn("picks")
    port = load_annotate._free_port()
    proxy = load_annotate._start_proxy(tmp_path, port, {"BIND": pages.address, "PICK_BIND": picks.address})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:  # until nginx listens
            try:
                _ask(base + "/healthz", "GET")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proxy.poll() is None, "nginx exited"
                assert time.monotonic() < deadline, "nginx did not listen within 10 s"
                time.sleep(0.05)
        for slug in SLUGS:
            assert _ask(base + reverse("studies:submit_judgment", args=[slug]), "POST") == "picks"
            for page in _other_pages(slug):
                assert (page, _ask(base + page, "POST" if page.endswith("/") else "GET")) == (page, "pages")
    finally:
        load_annotate._stop_proxy(proxy)
        pages.shutdown()
        picks.shutdown()
