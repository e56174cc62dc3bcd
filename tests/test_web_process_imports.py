"""The web process must never import torch: it is slow to import and has no use there."""

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
import ualign_web.wsgi, workers.tasks
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


def test_loading_the_web_app_and_the_task_module_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
