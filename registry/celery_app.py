"""The Celery app object and its configuration (from Django settings, namespace CELERY_).

The registry owns the app so the web process can enqueue by task name without importing
`workers`; `workers/celery.py` imports this app and registers the tasks on it.
"""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings")

app = Celery("hallmark")
app.config_from_object("django.conf:settings", namespace="CELERY")


def enqueue(task: str, *args: object) -> None:
    """Send a task by name (call inside `transaction.on_commit`)."""
    app.send_task(task, args=list(args))
