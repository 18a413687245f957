"""The Celery app object and its configuration (from Django settings, namespace CELERY_).

The registry owns the app so the web process can enqueue by task name without importing
`workers`; `workers/celery.py` imports this app and registers the tasks on it.
"""
from __future__ import annotations

import logging
import os

import kombu.exceptions
import redis.exceptions
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings")

app = Celery("hallmark")
app.config_from_object("django.conf:settings", namespace="CELERY")
log = logging.getLogger("hallmark.enqueue")

# What a send raises when the broker is down or unreachable (kombu wraps most of them).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError, redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError, ConnectionError, TimeoutError)


def enqueue(task: str, *args: object) -> bool:
    """Send a task by name (call inside `transaction.on_commit`); False when the broker is down.

    A failed send is logged, not raised: the caller marks its row (driven_at = null) and the
    sweeper sends the message again once the broker is back.
    """
    try:
        app.send_task(task, args=list(args))
    except BROKER_ERRORS as e:
        log.warning("could not send %s%r: the broker is unreachable (%s: %s); the sweeper will "
                    "send it again", task, tuple(args), type(e).__name__, e)
        return False
    return True
