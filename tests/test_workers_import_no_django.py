"""The libraries under workers/ are pure: importing them loads neither Django nor torch.

Django code sits on top of them (studies/), never inside; torch is imported only inside the
functions that run a model. The Celery glue lives in studies/tasks.py, so nothing is exempt.
Every module file under workers/ is imported, found by walking the folder (so a new subpackage,
even one without an `__init__.py`, is checked the day it appears), in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What a pure library must not load: the web framework and the app on top of it, the task queue,
# and the model stack (imported only inside the functions that run a model).
FORBIDDEN = ("django", "studies", "ualign_web", "celery", "torch", "transformers")

CODE = """
import importlib, json, sys
names = json.loads(sys.stdin.read())
for name in names:
    importlib.import_module(name)
forbidden = set(sys.argv[1:])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in forbidden)))
"""


def workers_modules() -> list[str]:
    """Every module of workers/, by its files: `workers/a/b.py` is `workers.a.b`, a package its folder."""
    names = []
    for path in sorted((ROOT / "workers").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_importing_every_workers_library_module_loads_no_django_and_no_torch():
    names = workers_modules()
    # The walk really reached the libraries, packages and their modules alike.
    assert len(names) > 5
    assert {
        "workers",
        "workers.generation.record",
        "workers.populations.utilities_csv",
        "workers.policies.equilibrium",
    } <= set(names)
    out = subprocess.run(
        [sys.executable, "-c", CODE, *FORBIDDEN],
        cwd=ROOT,
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == []
