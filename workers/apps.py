from __future__ import annotations

from django.apps import AppConfig


class WorkersConfig(AppConfig):
    """Holds the Celery tasks (no models), so autodiscover_tasks finds workers/tasks.py."""

    name = "workers"
    verbose_name = "Workers"
