"""bench/peers: the parts that need no peer installed (the task's data and configs, the count of
what Potato kept, the goal's verdict, the report), so a broken bench shows before a long run."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench" / "peers"), str(ROOT / "bench")]

import load_annotate  # noqa: E402
import peers_report  # noqa: E402
import run_peers  # noqa: E402


def test_every_tool_gets_the_same_prompts_and_both_responses():
    items = run_peers.prompts()
    assert len(items) == run_peers.PROMPTS == 2000
    assert len({p["id"] for p in items}) == 2000
    assert all(len(p["responses"]) == 2 and p["responses"][0] != p["responses"][1] for p in items)
    rows = run_peers.potato_rows(items)
    assert [r["id"] for r in rows] == [p["id"] for p in items]
    assert items[7]["prompt"] in rows[7]["text"]
    assert items[7]["responses"][1] in rows[7]["text"]


def test_potato_config_is_yaml_with_the_task_and_the_share():
    config = yaml.safe_load(run_peers.potato_config("k" * 64))
    assert config["annotation_schemes"][0]["labels"] == ["Response 1", "Response 2"]
    assert config["max_annotations_per_item"] == run_peers.PER_PROMPT == 30
    assert config["max_annotations_per_user"] == run_peers.SHARE == 50
    assert config["login"] == {"type": "url_direct", "url_argument": "PROLIFIC_PID"}
    assert config["debug"] is False
    assert config["persist_sessions"] is True


def test_count_potato_reads_every_annotators_state(tmp_path: Path):
    def state(user: str, labels: dict) -> None:
        (tmp_path / user).mkdir()
        (tmp_path / user / "user_state.json").write_text(json.dumps({"instance_id_to_label_to_value": labels}))

    pick = [[{"schema": "preference", "name": "Response 1"}, "Response 1"]]
    state("a", {"p0": pick, "p1": pick, "p2": []})  # p2 opened but not annotated
    state("b", {"p0": pick})
    (tmp_path / "pocket").mkdir()  # Potato's own folder, no user_state.json
    counted = run_peers.count_potato(tmp_path)
    assert counted == {"saved": 3, "annotators": 2, "items_over_quota": 0}


def test_unknown_tools_are_refused():
    with pytest.raises(SystemExit):
        run_peers._arguments(["--tools", "ualign,prodigy"])
    assert run_peers._arguments(["--tools", "potato, ualign"]).tools == ["potato", "ualign"]


def _outcome(tool: str, rps: float, p99: float, error: str = "") -> run_peers.Outcome:
    outcome = run_peers.Outcome(tool, version="1", serving="served", store="store", error=error)
    if not error:
        for key in ("warm-up", "closed", "think"):
            outcome.phases[key] = load_annotate.Phase(key, 10, 60, requests=100, rps=rps, p50=p99 / 2, p99=p99,
                                                      acknowledged=100, sent=101, refused=0)  # fmt: skip
            outcome.server_cpu_s[key] = 1.5
        outcome.saved, outcome.checks = 300, {"items_over_quota": 0}
    return outcome


def test_goal_compares_with_the_fastest_peer_and_needs_the_p99_too():
    outcomes = [_outcome("ualign", 100, 300), _outcome("label-studio", 40, 500), _outcome("potato", 55, 200)]
    judged = peers_report.goal(outcomes)
    assert judged["best_peer"] == "potato"
    assert judged["ratio"] == pytest.approx(1.82, abs=0.01)
    assert judged["met"] is False
    outcomes[0].phases["closed"].rps, outcomes[0].phases["closed"].p99 = 120, 150
    assert peers_report.goal(outcomes)["met"] is True
    assert peers_report.goal([_outcome("ualign", 100, 300)]) == {"judged": False}


def test_section_reports_a_peer_that_could_not_run_and_keeps_the_rest():
    outcomes = [_outcome("ualign", 100, 300), _outcome("label-studio", 0, 0, error="install\nNo matching distribution")]
    args = Namespace(closed_seconds=60, think_seconds=60)
    text = peers_report.section(outcomes, args, (1.0, 1.0, 1.0), datetime(2026, 12, 7, tzinfo=UTC), "2 cores", "cmd")
    assert text.startswith(run_peers.HEADING + "\n")
    assert "| ualign 1 | closed loop, 60 s | 10 | 100.0 | 150 | 300 | 15.0 | 100 | 0 |" in text
    assert "label-studio did not run here: `No matching distribution`" in text
    assert "| ualign | store | 300 | 3 | 300 | items over quota 0 |" in text


def test_read_requests_takes_each_request_row_of_locusts_stats(tmp_path: Path):
    stats = tmp_path / "run_stats.csv"
    stats.write_text("Type,Name,Request Count,Failure Count,50%,99%\n"
                     "POST,potato: save annotation,40,0,120,900\n"
                     "FLOW,pick,40,1,300,1500\n"
                     ",Aggregated,80,1,200,1500\n")  # fmt: skip
    assert run_peers.read_requests(stats) == {
        "potato: save annotation": {"count": 40, "p50": 120.0, "p99": 900.0},
        "pick": {"count": 40, "p50": 300.0, "p99": 1500.0},
    }
    assert run_peers.read_requests(tmp_path / "missing.csv") == {}
