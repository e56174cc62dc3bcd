"""The web application is warmed when it is loaded (`ualign_web/warmup.py`, from `ualign_web/wsgi.py`):
under gunicorn's preload_app that is the master, before it forks, so a fresh worker (at start, or
after max_requests) loads nothing on its first requests (#26: about 200 ms of CPU a fresh worker
spent on its first study link, join and consent, while the requests behind it waited).

Checked in a fresh interpreter, as a worker starts: after `import ualign_web.wsgi`, resolving and
reversing the annotator's URLs, getting every template the annotator's pages render and rendering
Markdown import no module and compile no template; and no database connection was opened (one
opened in the master would be shared by every forked worker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import json, sys
import ualign_web.wsgi  # loads the application, and warms it
from django.db import connections
from django.template import base
from django.template.loader import get_template
from django.urls import resolve, reverse

compiled = []
original = base.Template.compile_nodelist
base.Template.compile_nodelist = lambda self: compiled.append(self.name) or original(self)
before = set(sys.modules)
for name in ("join", "consent", "instructions", "task", "submit_judgment", "done"):
    resolve(reverse(f"studies:{name}", args=["a-study"]))
resolve("/admin/")
for name in ("studies/join.html", "studies/consent.html", "studies/instructions.html", "studies/annotate.html",
             "studies/annotate.html#comparison", "studies/annotate.html#progress", "studies/done.html",
             "studies/unavailable.html", "studies/link_invalid.html", "404.html", "500.html"):
    get_template(name)
from studies.templatetags.safe_markdown import render_safe_markdown
render_safe_markdown("A **consent** text, [a link](https://example.org) and a list:\\n\\n- one\\n- two")
print(json.dumps({
    "imported": sorted(set(sys.modules) - before),
    "compiled": compiled,
    "connected": [alias for alias in connections if connections[alias].connection is not None],
}))
"""


def test_a_fresh_worker_finds_the_urls_templates_and_markdown_loaded_and_no_connection_open():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ualign_web.settings", "DEBUG": "false",
           "SECRET_KEY": "warm-up-test-" + "x" * 50, "ALLOWED_HOSTS": "127.0.0.1"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"imported": [], "compiled": [], "connected": []}
