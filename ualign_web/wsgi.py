from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")
application = get_wsgi_application()

from ualign_web.warmup import warm_up  # noqa: E402 - needs the settings get_wsgi_application set up

warm_up()  # before gunicorn forks its workers (preload_app): none of them loads these on a request
