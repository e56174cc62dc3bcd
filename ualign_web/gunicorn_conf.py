"""gunicorn settings for production (`scripts/serve-prod`; `gunicorn -c python:ualign_web.gunicorn_conf`).

Read from the environment like the Django settings; `.env.example` documents each variable.
https://gunicorn.org/reference/settings/
"""

from __future__ import annotations

import gc
import os

wsgi_app = "ualign_web.wsgi:application"
bind = [os.environ.get("BIND", "127.0.0.1:8000")]
# Sync workers: a pick is a short, database-bound request. 2-4 per core.
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
# A request running longer than this is killed with its worker (the database's statement
# timeout, DB_STATEMENT_TIMEOUT_MS, should fire first and answer a 503 instead).
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# Recycle workers now and then so that a slow leak cannot grow without bound. Not often: while a
# recycled worker is replaced (up to a second) and opens its database connection, the others serve
# its share; at 2,000 requests that happened every ~20 s under a launch burst's ~200 requests/s
# (#26), a queue in the middle of the arrival. 20,000 is hours of a real study.
max_requests = 20000
max_requests_jitter = 2000
# Import Django and ualign once, in the master, and fork the workers from it: a new worker (at
# start, and at every recycle above) is then ready at once instead of spending about 1.8 s of CPU
# importing the app while the others serve its share (docs/benchmarks.md, #14). Nothing opens a
# connection at import time (Django's and the broker's are made on first use, in the worker).
preload_app = True
# The TLS-terminating proxy's address; gunicorn trusts its X-Forwarded-* headers only from there.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Heartbeat files in memory, not on a possibly slow disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn 27's control socket defaults to one path per user, which two servers on a machine
# would share; ualign does not use it.
control_socket_disable = True


def pre_fork(server, worker) -> None:
    """Freeze the master's objects (the app preloaded above) before each worker is forked from it.

    A worker's full garbage collection otherwise walks every object the import made, ~150,000 of
    them: about 95 ms of CPU on a 2-core machine (`make bench-gc`), during which the
    requests queued on that worker wait. Frozen, they are skipped by every collection (they live
    as long as the process anyway), and the pages of memory the worker shares with the master are
    not written to by the collector. https://docs.python.org/3/library/gc.html#gc.freeze
    """
    gc.collect()  # what is garbage now would otherwise be frozen with the rest
    gc.freeze()
