"""The worker entry point: `celery -A workers worker` loads this module.

It sets up Django, imports the registry's Celery app and registers the tasks on it. Each
worker child runs torch with one thread and warms up autograd/Adam once at start, so the
first real check does not pay that cost.
"""
from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings")
django.setup()

from celery.signals import worker_process_init  # noqa: E402

import workers.tasks  # noqa: E402,F401  (registers the tasks)
from registry.celery_app import app  # noqa: E402

__all__ = ["app"]


@worker_process_init.connect
def _warm_up(**_: object) -> None:
    import torch

    torch.set_num_threads(1)
    w = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([w], lr=0.1)
    (w.sum() ** 2).backward()
    opt.step()
    from django.db import connections

    connections.close_all()  # never share a DB connection inherited from the parent
