"""`make bench-load`'s reading of nginx's access log: each burst's server-side times (bench/load_annotate.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import load_annotate  # noqa: E402


def test_server_side_times_split_the_picks_at_the_last_walk_and_keep_to_the_burst_and_the_study(tmp_path):
    log = tmp_path / "access.log"
    s = "/s/bench-load/"
    lines = [
        f"99.000 POST {s}judgments/ 200 0.500",  # before the burst: another phase's
        f"100.100 GET {s} 200 0.004",
        f"100.200 POST {s} 200 0.010",
        f"100.300 POST {s}consent/ 200 0.008",
        f"100.400 POST {s}judgments/ 200 0.030",  # while they arrive
        f"100.500 POST {s}instructions/ 200 0.012",  # the last walk's end
        f"100.600 POST {s}judgments/ 200 0.020, 0.006",  # after (the upstream was tried twice: its last try)
        f"100.700 POST {s}judgments/ 200 0.002",
        f"100.800 POST {s}judgments/ 502 -",  # no upstream answered: not a server time
        "100.900 POST /s/other-study/judgments/ 200 0.100",  # another study
        f"101.000 GET {s}task/ 200 0.009",  # not a page the burst reports
        f"200.000 POST {s}judgments/ 200 0.700",  # after the burst: another phase's
    ]
    log.write_text("\n".join(lines) + "\n")
    phase = load_annotate.Phase("burst", 300, 60, started=100.0, ended=150.0)

    server = load_annotate._server_side(log, phase, "bench-load")

    assert server == {
        "landing": {"requests": 1, "p50": 4.0, "p99": 4.0},
        "join": {"requests": 1, "p50": 10.0, "p99": 10.0},
        "consent": {"requests": 1, "p50": 8.0, "p99": 8.0},
        "instructions and first task": {"requests": 1, "p50": 12.0, "p99": 12.0},
        "pick while arriving": {"requests": 1, "p50": 30.0, "p99": 30.0},
        "pick after": {"requests": 2, "p50": 2.0, "p99": 6.0},
    }
