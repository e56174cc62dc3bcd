"""The libraries under workers/ are pure: importing them loads neither Django nor torch.

Django code sits on top of them (studies/), never inside; torch is imported only inside the
functions that run a model. The Celery glue lives in studies/tasks.py, so nothing is exempt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import json, pkgutil, sys
import workers

def fail(name):
    raise ImportError(f"could not import {name}")

imported = ["workers"]
for info in pkgutil.walk_packages(workers.__path__, "workers.", onerror=fail):
    __import__(info.name)
    imported.append(info.name)
loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("django", "torch", "transformers")
)
print(json.dumps({"imported": imported, "loaded": loaded}))
"""


def test_importing_every_workers_library_module_loads_no_django_and_no_torch():
    out = subprocess.run(
        [sys.executable, "-c", CODE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    imported = set(result["imported"])
    # The walk really reached the libraries, packages and their modules alike.
    assert {
        "workers.generation.record",
        "workers.populations.utilities_csv",
        "workers.policies.equilibrium",
    } <= imported
    assert result["loaded"] == []
