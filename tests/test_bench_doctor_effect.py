"""bench/bench_doctor_effect.py end to end on tiny random models (`--quick`), so that the bench
cannot rot between its long runs: #24's rule that local models load only from allowed folders
once broke it after 26 minutes of training, at the first doctor it loaded back.

The models are random (torch on the CPU, no GPU needed): this checks the script's path, training,
the folder rule, evaluation and the report, and measures nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_trains_loads_back_and_reports_every_setting(tmp_path):
    # No UALIGN_MODEL_DIRS from outside: the bench must declare its own temporary folders.
    env = {k: v for k, v in os.environ.items() if k != "UALIGN_MODEL_DIRS"}
    run = subprocess.run(
        [sys.executable, "bench/bench_doctor_effect.py", "--quick", "--prompts", "4", "--steps", "2",
         "--pairs-per-step", "2", "--betas", "0,1", "--pool", "3", "--eval", "2",
         "--max-new-tokens", "4", "--threads", "1", "--personas", "child",
         "--part-out", str(tmp_path / "part.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    part = json.loads((tmp_path / "part.json").read_text())
    settings = {(r["doctor"], r["beta"], r["alpha_rule"]) for r in part["rows"]}
    # β = 1 under both α rules besides plain sampling, for the one doctor trained.
    assert {(d, b, a) for d, b, a in settings if b == 1} == {("child", 1, "1-beta"), ("child", 1, "1")}
    assert len(part["histories"]["child"]) == 2
    assert part["split"]["train"]
    assert part["split"]["held_out"]
    assert not set(part["split"]["train"]) & set(part["split"]["held_out"])
