"""Leases: a running task keeps `lease_until` of its rows in the future with a heartbeat.

A worker that dies (kill -9, OOM, power loss) stops renewing; once the lease lapses the
sweeper re-drives the work and any worker may claim it. The lease, not the broker's
visibility timeout, decides how soon a dead worker's work runs again.

One heartbeat thread per worker process renews every lease its tasks hold, every third of the
lease's duration; tasks register their rows with `held` / `rows_held`. (A thread per task cost
a thread start per task, which waits for the new thread to be scheduled: 11 % of a worker's
wall time on a loaded 2-core host, measured with py-spy while draining a burst.)
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
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
    heart = _Heartbeat.of_this_process()
    token = heart.add(model, match)
    try:
        yield
    finally:
        heart.remove(token)


class _Heartbeat:
    """The process's renewer: a daemon thread that extends each registered lease a third of
    the lease's duration after it was claimed or last renewed."""

    _lock = threading.Lock()
    _current: _Heartbeat | None = None

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.parent = os.getppid()
        self.held: dict[int, tuple[type[Model], dict[str, object], float]] = {}  # token -> due
        self.ids = itertools.count()
        self.guard = threading.Lock()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self.thread.start()

    @classmethod
    def of_this_process(cls) -> _Heartbeat:
        """The heartbeat of this process, started on first use (a forked child starts its
        own: threads do not survive fork)."""
        with cls._lock:
            if cls._current is None or cls._current.pid != os.getpid():
                cls._current = cls()
            return cls._current

    def add(self, model: type[Model], match: dict[str, object]) -> int:
        with self.guard:
            token = next(self.ids)
            self.held[token] = (model, match, time.monotonic() + _period())
        self.wake.set()  # the new lease may be due before the thread's next wake-up
        return token

    def remove(self, token: int) -> None:
        with self.guard:
            self.held.pop(token, None)

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self.guard:
                due = [(t, m, q) for t, (m, q, at) in self.held.items() if at <= now]
                for t, m, q in due:
                    self.held[t] = (m, q, now + _period())
                nxt = min((at for _, _, at in self.held.values()), default=None)
            if due and os.getppid() != self.parent:
                # The worker's main process died (kill -9): this orphaned child can no longer
                # ack, so let its leases lapse and another worker take the work.
                log.warning("the worker's main process died; no longer renewing leases")
                return
            for _, model, match in due:
                _renew(model, match)
            if due:  # renewals are rare (tasks longer than a third of a lease): no idle backend
                connections.close_all()
            self.wake.wait(None if nxt is None else max(0.0, nxt - time.monotonic()))
            self.wake.clear()


def _period() -> float:
    return settings.HALLMARK_LEASE_SECONDS / 3


def _renew(model: type[Model], match: dict[str, object]) -> None:
    key = match.get("pk", match.get("runner"))
    try:
        model._default_manager.filter(**match).update(lease_until=timezone.now() + duration())
    except DatabaseError as e:  # the task itself will meet the outage and retry
        log.warning("could not renew the lease of %s %s: %s", model.__name__, key, e)
