"""Leases: a running task keeps `lease_until` of its row in the future with a heartbeat thread.

A worker that dies (kill -9, OOM, power loss) stops renewing; once the lease lapses the
sweeper re-drives the work and any worker may claim it. The lease, not the broker's
visibility timeout, decides how soon a dead worker's work runs again.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Model
from django.utils import timezone

log = logging.getLogger("hallmark.workers")


def duration() -> timedelta:
    return timedelta(seconds=settings.HALLMARK_LEASE_SECONDS)


@contextmanager
def held(model: type[Model], pk: int, **still: object) -> Iterator[None]:
    """Renew the lease of row `pk` every third of its duration while the block runs.

    Args:
        model: Verification or CheckResult.
        pk: the row whose lease the caller has just claimed.
        still: the row must still match these fields (e.g. status="running"); once it does
            not (finished, or re-driven after a stall), renewing stops having any effect.
    """
    with rows_held(model, pk=pk, **still):
        yield


@contextmanager
def rows_held(model: type[Model], **match: object) -> Iterator[None]:
    """`held` for every row matching `match` (a check batch: runner=<its run>, status=running).

    Example:
        with rows_held(CheckResult, runner=token, status=RUNNING): ...
    """
    pk = match.get("pk", match.get("runner"))
    stop = threading.Event()
    period = settings.HALLMARK_LEASE_SECONDS / 3
    parent = os.getppid()

    def renew() -> None:
        try:
            while not stop.wait(period):
                if os.getppid() != parent:
                    # The worker's main process died (kill -9): this orphaned child can no
                    # longer ack, so let the lease lapse and another worker take the work.
                    log.warning("the worker's main process died; no longer renewing the "
                                "lease of %s %s", model.__name__, pk)
                    return
                try:
                    model._default_manager.filter(**match).update(
                        lease_until=timezone.now() + duration())
                except DatabaseError as e:  # the task itself will meet the outage and retry
                    log.warning("could not renew the lease of %s %s: %s", model.__name__, pk, e)
                    connections.close_all()  # reconnect next time (e.g. after a restart)
        finally:
            connections.close_all()  # this thread's own connections

    thread = threading.Thread(target=renew, name=f"lease-{model.__name__}-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
