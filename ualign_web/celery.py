"""The Celery app. Settings come from Django's settings under the CELERY_ namespace."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")

# DjangoTask gives every task delay_on_commit(), so services enqueue only after their
# transaction commits: https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
app = Celery("ualign_web", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
