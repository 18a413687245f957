"""The worker entry point: `celery -A workers worker` (and `celery -A workers beat`) load this.

It sets up Django, imports the registry's Celery app and registers the tasks on it. Torch is
warmed up (autograd, Adam, one thread) once in the worker's main process, before the pool
forks: every child, including those started again after HALLMARK_WORKER_MAX_TASKS_PER_CHILD
tasks, inherits the warm state and reports ready in milliseconds, however loaded the host is.
(Warming up in each child took 4–8.5 s at load 9–10, past Celery's 4 s start-up limit, and
children were killed in loops.)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings")
django.setup()

from celery.signals import (  # noqa: E402
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
)
from django.db import close_old_connections  # noqa: E402

import workers.tasks  # noqa: E402,F401  (registers the tasks)
from registry.celery_app import app  # noqa: E402

__all__ = ["app"]


@worker_init.connect
def _warm_up(**_: object) -> None:
    """Pay torch's first-use costs once, in the parent, before any child is forked."""
    import torch

    torch.set_num_threads(1)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([w], lr=0.1)
    (w.sum() ** 2).backward()
    opt.step()


@worker_process_init.connect
def _child_ready(**_: object) -> None:
    import torch
    from django.db import connections

    torch.set_num_threads(1)
    connections.close_all()  # never share a DB connection inherited from the parent
    age = _seconds_since_start()
    if age is not None:  # how close to worker_proc_alive_timeout a loaded host gets
        logging.getLogger("hallmark.workers").info("worker child %d ready %.3f s after fork",
                                                   os.getpid(), age)


@task_prerun.connect
@task_postrun.connect
def _connection_rule(sender: object = None, **_: object) -> None:
    """Django's per-request connection rule, per task: close a connection older than
    CONN_MAX_AGE or broken by an error, keep the others (settings.CELERY_DB_REUSE_MAX).
    Not for a task run eagerly inside the caller (its connection is the caller's)."""
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


def _seconds_since_start() -> float | None:
    """This process's age from /proc (Linux), or None elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
