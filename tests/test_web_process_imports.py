"""Tests of the architecture itself: what each process imports.

The web process must never import torch (slow to import, no use there), and `workers` holds
pure libraries that import no Django and nothing of `studies`: imports point one way,
from the Django app down to the libraries.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "ualign_web.settings"
import django
django.setup()
from django.contrib import admin
from django.urls import get_resolver
admin.autodiscover()
get_resolver().url_patterns  # imports every view module
import ualign_web.wsgi, studies.tasks
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""

# Every module under workers/, imported without Django settings: none may pull in Django or studies.
WORKERS_CODE = """
import importlib, pkgutil, sys
import workers
names = ["workers"] + [m.name for m in pkgutil.walk_packages(workers.__path__, "workers.")]
for name in names:
    importlib.import_module(name)
print(len(names), sorted({m.split(".")[0] for m in sys.modules} & {"django", "studies", "celery", "ualign_web"}))
"""


def test_loading_the_web_app_and_the_task_module_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_workers_libraries_import_no_django():
    out = subprocess.run([sys.executable, "-c", WORKERS_CODE], cwd=ROOT, capture_output=True, text=True, check=True)
    count, imported = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 5  # the walk found the package's modules
    assert imported == "[]"
