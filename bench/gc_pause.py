"""A web worker's full garbage collection, with and without the master's objects frozen (`make bench-gc`).

gunicorn preloads the app in its master and forks the workers from it (ualign_web/gunicorn_conf.py).
Every object that import made is then in each worker's oldest generation, and a full collection
walks them all while the requests queued on that worker wait. `pre_fork` freezes them
(`gc.freeze`), so a worker's collections walk only what it made itself.

This loads the app as the master does (`ualign_web.wsgi`: Django set up, the URLconf, templates
and Markdown renderer warmed; no database), then times full collections (`gc.collect()`, CPU
time of this process, median of ROUNDS) before and after calling the config's own `pre_fork`,
each with YOUNG fresh container objects alive, as a worker has mid-request.

    .venv/bin/python bench/gc_pause.py [--rounds 15] [--young 20000] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import command_line, publish  # noqa: E402

HEADING = "## A web worker's full garbage collection, preloaded app frozen or not (issue #26)"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--young", type=int, default=20_000, help="fresh objects alive at each collection")
    parser.add_argument("--write", type=Path, help="also write the section into this Markdown file")
    return parser.parse_args()


class _Row:
    """A stand-in for a model instance a request holds (tracked by the collector, as they are)."""

    def __init__(self, n: int) -> None:
        self.n = n


def _full_collections(rounds: int, young: int) -> tuple[float, int]:
    """Median CPU ms of a full collection with `young` fresh objects alive; the objects it walks."""
    spent = []
    for _ in range(rounds):
        alive = [_Row(i) for i in range(young)]  # a request's working set
        started = time.process_time()
        gc.collect()
        spent.append(1000 * (time.process_time() - started))
        walked = len(gc.get_objects())  # frozen objects are not in it: no collection visits them
        del alive
    return statistics.median(spent), walked


def main() -> None:
    args = _arguments()
    os.environ.update({
        "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused", "DJANGO_SETTINGS_MODULE": "ualign_web.settings",
    })  # fmt: skip
    load = tuple(round(x, 2) for x in os.getloadavg())
    started = time.process_time()
    import ualign_web.wsgi  # noqa: F401 - what gunicorn's master loads (preload_app), no database

    import_ms = 1000 * (time.process_time() - started)
    from ualign_web import gunicorn_conf

    before_ms, before_walked = _full_collections(args.rounds, args.young)
    gunicorn_conf.pre_fork(None, None)
    frozen = gc.get_freeze_count()
    after_ms, after_walked = _full_collections(args.rounds, args.young)
    cpu = platform.processor() or platform.machine()
    section = "\n".join([
        HEADING,
        "",
        f"- **Command:** `{command_line('bench/gc_pause.py', None)}`",
        f"- **Machine:** {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, load average "
        f"before {load}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Setup:** the app loaded as gunicorn's master loads it ({import_ms:.0f} ms of CPU), then "
        f"{args.rounds} full collections each way with {args.young:,} fresh objects alive; CPU time, median.",
        "",
        "| | objects a full collection walks | CPU ms per full collection |",
        "|---|---:|---:|",
        f"| not frozen (before) | {before_walked:,} | {before_ms:.1f} |",
        f"| frozen by `pre_fork` ({frozen:,} objects) | {after_walked:,} | {after_ms:.1f} |",
        f"| frozen ÷ not frozen | {after_walked / before_walked:.2g}× | {after_ms / before_ms:.2g}× |",
        "",
    ])  # fmt: skip
    publish(section, HEADING, args.write)


if __name__ == "__main__":
    main()
