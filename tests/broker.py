"""The real Redis broker on a private queue, or a dead one (a closed loopback port), for tests
that check what the registry sends.

`use_broker` points the registry's Celery app at `url` and a private default queue for the
duration, dropping the app's cached connections, routes and producers so the next send uses
them, and restores the previous configuration afterwards.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from registry.celery_app import app

REDIS_URL = os.environ.get("HALLMARK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@dataclass
class Broker:
    client: redis.Redis
    queue: str

    def messages(self) -> list[tuple[str, list[object]]]:
        """(task name, args) of every message waiting in the queue, oldest first."""
        out = []
        for raw in reversed(self.client.lrange(self.queue, 0, -1)):
            msg = json.loads(raw)
            args = json.loads(base64.b64decode(msg["body"]))[0]
            out.append((msg["headers"]["task"], args))
        return out

    def take(self) -> list[tuple[str, list[object]]]:
        """The waiting messages, removed from the queue."""
        got = self.messages()
        self.client.delete(self.queue)
        return got


def closed_port_url() -> str:
    """A redis:// URL on a loopback port nothing listens on (a dead broker)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def _configure(url: str, queue: str) -> None:
    app.conf.broker_url = url
    app.conf.task_default_queue = queue
    app._pool = None
    amqp = app.amqp
    amqp._producer_pool = None
    amqp._rtable = None
    for cached in ("queues", "default_queue", "router"):
        amqp.__dict__.pop(cached, None)


@contextmanager
def use_broker(url: str = REDIS_URL, queue: str | None = None) -> Iterator[Broker]:
    saved = app.conf.broker_url, app.conf.task_default_queue
    queue = queue or f"hallmark-unit-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(url, socket_timeout=5)
    _configure(url, queue)
    try:
        yield Broker(client, queue)
    finally:
        with contextlib.suppress(redis.exceptions.ConnectionError):  # the dead broker
            client.delete(queue)
        _configure(*saved)
