"""Tests of the architecture itself: what each process imports.

The web process must never import torch (slow to import, no use there). That `workers` holds
pure libraries importing no Django and nothing of `studies` (imports point one way, from the
Django app down to the libraries) is checked in tests/test_workers_import_no_django.py.
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

def test_loading_the_web_app_and_the_task_module_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"

