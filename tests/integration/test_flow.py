"""The whole flow on real PostgreSQL, Redis and a celery worker process."""
from __future__ import annotations

import base64
import io
import json
import time

import pytest
from rest_framework.test import APIClient

from registry.demo import export_onnx, stolen_and_independent, train_marked_model
from registry.models import CheckResult, Report, Verification
from tests.registry.conftest import make_actor
from verifier.cli import main as hallmark

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def models():  # type: ignore[no-untyped-def]
    marked = train_marked_model(seed=0)
    return marked, *stolen_and_independent(marked)


def wait_for_verification(v_id: str, api: APIClient, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = api.get(f"/api/verifications/{v_id}/").json()
        if v["status"] in ("done", "failed"):
            return v
        time.sleep(0.3)
    raise AssertionError(f"verification still {v['status']} ({v['progress']})")


def register_model(actor, marked) -> str:  # type: ignore[no-untyped-def]
    model_id = actor.api.post("/api/models/", {"name": "digits"}, format="json").json()["id"]
    for blob in marked.keys.values():
        f = io.BytesIO(blob)
        f.name = "key.safetensors"
        r = actor.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
        assert r.status_code == 201, r.json()
    return model_id


def test_a_stolen_copy_is_attributed_and_an_independent_model_is_not(
        celery_worker, file_server, models, tmp_path, client):
    marked, stolen, independent = models
    base, folder = file_server
    export_onnx(stolen, folder / "stolen.onnx")
    export_onnx(independent, folder / "independent.onnx")
    alice = make_actor("alice")
    register_model(alice, marked)

    ids = {name: alice.api.post("/api/verifications/", {"url": f"{base}/{name}.onnx"},
                                format="json").json()["id"] for name in ("stolen", "independent")}
    done = {name: wait_for_verification(i, alice.api) for name, i in ids.items()}
    assert all(v["status"] == "done" for v in done.values()), (done, celery_worker()[-3000:])
    assert all(v["progress"] == "2/2" for v in done.values())

    reports = {name: client.get(f"/api/reports/{v['report']}").json() for name, v in done.items()}
    for name, report in reports.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(report))
        assert hallmark(["audit", str(path)]) == 0
    pred = {n: json.loads(base64.b64decode(r["envelope"]["payload"]))["predicate"]
            for n, r in reports.items()}
    assert pred["stolen"]["verdict"]["attributed"]
    assert {c["scheme"]: c["decision"] for c in pred["stolen"]["checks"]} == {
        "uchida": "attributed", "trigger_set": "attributed"}
    assert all(c["log10_p"] < -6 for c in pred["stolen"]["checks"])
    assert not pred["independent"]["verdict"]["attributed"]
    assert all(c["log10_p"] > -3 for c in pred["independent"]["checks"])
    assert pred["stolen"]["tests_run"] == 2 and pred["stolen"]["correction"] == "holm"
    trigger = next(c for c in pred["stolen"]["checks"] if c["scheme"] == "trigger_set")
    assert trigger["queries"] > 0  # black-box queries are counted in the report


def _sessions() -> int:
    """Connections ever opened to the test database (PostgreSQL's cumulative statistics)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cur.fetchone()[0])


def test_workers_keep_their_database_connections_across_tasks(celery_worker, file_server, models):
    """Each verification is 4 tasks (fetch, 2 check batches, finalize); Celery's Django fixup
    would open a new PostgreSQL backend for every one of them (settings.CELERY_DB_REUSE_MAX)."""
    marked, stolen, _ = models
    base, folder = file_server
    export_onnx(stolen, folder / "stolen.onnx")
    alice = make_actor("alice")
    register_model(alice, marked)
    before = _sessions()
    ids = [alice.api.post("/api/verifications/", {"url": f"{base}/stolen.onnx"},
                          format="json").json()["id"] for _ in range(6)]
    assert all(wait_for_verification(i, alice.api)["status"] == "done" for i in ids)
    time.sleep(1.5)  # backends report their statistics at most a second late
    opened = _sessions() - before
    assert opened <= 6, f"{opened} connections opened for 24 tasks: {celery_worker()[-2000:]}"


def test_a_refused_download_leaves_no_checks_and_no_report(celery_worker, file_server, settings):
    base, _ = file_server
    alice = make_actor("alice")
    r = alice.api.post("/api/verifications/", {"url": f"{base}/missing.onnx"}, format="json")
    v = wait_for_verification(r.json()["id"], alice.api)
    assert v["status"] == "failed" and v["error_code"] == "fetch_failed"
    assert "404" in v["error_message"]
    row = Verification.objects.get(public_id=r.json()["id"])
    assert not CheckResult.objects.filter(verification=row).exists()
    assert not Report.objects.filter(verification=row).exists()
