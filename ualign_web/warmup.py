"""Load, once and before any request, what Django and ualign otherwise load on a web worker's first
requests: the URLconf (the admin's URLs import most of the researcher's modules), the reverse
lookup tables, the templates (compiled into the cached loader) and the Markdown renderer.

Called by `ualign_web/wsgi.py` when the application is loaded. Under gunicorn with `preload_app`
(`ualign_web/gunicorn_conf.py`) that is the master process, before it forks: every worker, and
every worker started again after `max_requests`, begins with all of it in memory it shares with
the master. Without it, each fresh worker spent about 200 ms of CPU on its first study link, join
and consent (#26, measured served: the URLconf 110 ms, the reverse tables 40 ms, markdown-it's
import 55 ms), during which the requests queued behind it waited; in an arrival burst that is a
pick's p99.

Nothing here opens a database connection (a connection opened in the master would be shared by
the forked workers), reads a study, or writes anything.
"""

from __future__ import annotations

from pathlib import Path

from django.template import engines
from django.template.loader import get_template
from django.urls import get_resolver, reverse

# Template fragments (django-template-partials) rendered by name on the annotator's hot path.
PARTIALS = ("studies/annotate.html#comparison", "studies/annotate.html#progress")


def warm_up() -> list[str]:
    """Load the URLconf, the reverse tables, every project template and the Markdown renderer;
    returns the names of the templates loaded."""
    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and, through the admin, its modules
    reverse("studies:join", args=["warm-up"])  # fills the reverse lookup tables, namespaces included
    loaded = [*_templates(), *PARTIALS]
    for name in loaded:
        get_template(name)
    from studies.templatetags.safe_markdown import render_safe_markdown

    render_safe_markdown("*ualign*")  # imports markdown-it and builds the renderer
    return loaded


def _templates() -> list[str]:
    """The project's own templates (settings.TEMPLATES' DIRS), by the names views ask for them."""
    names = []
    for engine in engines.all():
        for directory in getattr(engine, "dirs", []):
            root = Path(directory)
            names += sorted(str(path.relative_to(root)) for path in root.rglob("*.html"))
    return names
