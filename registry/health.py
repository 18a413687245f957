"""`GET /health`: can this registry take work? Database, broker and at least one live worker.

Answers 200 with each component's state when all three are up, else 503 in the API's error
shape, naming what is down. Every probe has its own short timeout, so a dead dependency makes
the answer slow by at most a couple of seconds, never hang; the worker ping is cached for
`_WORKER_TTL` seconds so frequent probes (load balancers, compose healthchecks) do not flood
the broker.
"""
from __future__ import annotations

import time
from typing import Any

from django.db import connection
from django.http import HttpRequest, JsonResponse

from registry.api_errors import problem_body
from registry.celery_app import app

_WORKER_TTL = 10.0  # seconds a successful worker ping is trusted
_last_worker_seen = 0.0


def _database() -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchone()
    return "ok"


def _broker() -> str:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


def _workers() -> str:
    global _last_worker_seen
    if time.monotonic() - _last_worker_seen < _WORKER_TTL:
        return "ok"
    replies = app.control.ping(timeout=1.0)
    if not replies:
        raise RuntimeError("no celery worker answered a ping within 1 s; start one with "
                           "`celery -A workers worker -Q hallmark`")
    _last_worker_seen = time.monotonic()
    return f"ok ({len(replies)} answering)"


def health(request: HttpRequest) -> JsonResponse:
    checks: dict[str, Any] = {}
    failed = []
    for name, probe in (("database", _database), ("broker", _broker), ("workers", _workers)):
        try:
            checks[name] = probe()
        except Exception as e:  # any failure of a dependency is "down", with its reason
            checks[name] = f"down: {type(e).__name__}: {e}"[:300]
            failed.append(name)
            if name == "broker":
                checks["workers"] = "unknown: the broker is down"
                break
    if failed:
        body = problem_body(503, "unhealthy", f"down: {', '.join(failed)}")
        return JsonResponse({**body, "checks": checks}, status=503,
                            content_type="application/problem+json")
    return JsonResponse({"status": "ok", "checks": checks})
