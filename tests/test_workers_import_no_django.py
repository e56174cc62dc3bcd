"""The libraries under workers/ are pure: importing them loads neither Django nor torch.

Django code sits on top of them (studies/), never inside; torch is imported only inside the
functions that run a model. The Celery glue (workers/tasks.py, workers/apps.py) is Django by
nature and is left out while it still lives here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The Django glue that may still live in workers/; everything else there must stay pure.
DJANGO_GLUE = ("workers.tasks", "workers.apps")

CODE = f"""
import json, pkgutil, sys
import workers

def fail(name):
    raise ImportError(f"could not import {{name}}")

imported = ["workers"]
for info in pkgutil.walk_packages(workers.__path__, "workers.", onerror=fail):
    if info.name in {DJANGO_GLUE!r}:
        continue
    __import__(info.name)
    imported.append(info.name)
loaded = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("django", "torch", "transformers")
)
print(json.dumps({{"imported": imported, "loaded": loaded}}))
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
    assert not imported & set(DJANGO_GLUE)
    assert result["loaded"] == []
