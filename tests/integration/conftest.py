"""Real components: PostgreSQL (DATABASE_URL), Redis (HALLMARK_TEST_REDIS_URL) and a real
`celery worker` subprocess. These tests fail, not skip, when a service is down."""
from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.db import connection

from registry.celery_app import app
from tests.hubserver import HubServer

REDIS_URL = os.environ.get("HALLMARK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    client.ping()  # fails the tests when Redis is down
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory) -> Iterator[HubServer]:  # type: ignore[no-untyped-def]
    """The loopback Hugging Face Hub + CDN (tests/hubserver.py) the worker's HF endpoint names."""
    with HubServer(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, redis_url: str, tmp_path_factory,  # type: ignore[no-untyped-def]
                  hub_server: HubServer) -> Iterator[str]:
    """A real worker process on the test database and a private queue; stopped before teardown."""
    db = connection.settings_dict
    assert connection.vendor == "postgresql", "integration tests need DATABASE_URL=postgres://…"
    queue = f"hallmark-test-{os.getpid()}"
    app.conf.broker_url = redis_url
    app.conf.task_default_queue = queue
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {**os.environ, "CELERY_BROKER_URL": redis_url, "HALLMARK_QUEUE": queue,
           "HALLMARK_FETCH_ALLOW_LOOPBACK": "1",  # the suspects are served on 127.0.0.1
           "HALLMARK_HF_ENDPOINT": hub_server.endpoint,  # Hub suspects: the loopback Hub
           "HF_HUB_DISABLE_TELEMETRY": "1",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-c", "2",
             "-Q", f"{queue},{queue}.sweep", "-n", f"test-{os.getpid()}@%h", "--loglevel", "INFO", "--without-gossip",
             "--without-mingle"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while b" ready." not in log.read_bytes():
        assert proc.poll() is None, f"celery worker exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"celery worker not ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    yield log.read_text
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def file_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:  # type: ignore[no-untyped-def]
    """A loopback HTTP server for a folder: (base URL, folder)."""
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass
