"""Two worker hosts sharing only PostgreSQL and Redis (each its own HALLMARK_DATA_DIR): a scan
of 8 commitments runs its checks on both and completes with zero errors."""
from __future__ import annotations

import base64
import io
import json
import os

import pytest
import torch

from registry.models import CheckResult, Verification
from tests.broker import use_broker
from tests.integration.processes import host_env, start_worker, wait_for
from tests.integration.test_flow import wait_for_verification
from tests.keys import uchida_key_blob
from tests.registry.conftest import make_actor
from verifier import toy
from verifier.cli import main as hallmark

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_scan_runs_on_two_hosts_without_a_shared_folder_and_has_no_errors(
        django_db_setup, redis_url, file_server, tmp_path, client):
    from safetensors.torch import save

    base, folder = file_server
    torch.manual_seed(7)
    (folder / "hosts.safetensors").write_bytes(
        save({k: v.contiguous() for k, v in toy.MLP().state_dict().items()}))
    alice = make_actor("alice")
    model_id = alice.api.post("/api/models/", {"name": "scanned"}, format="json").json()["id"]
    for seed in range(8):
        f = io.BytesIO(uchida_key_blob(seed=seed))
        f.name = "key.safetensors"
        r = alice.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
        assert r.status_code == 201
    queue = f"hallmark-hosts-{os.getpid()}"
    # 8 batches of 1 check (not the default 2 of 4), so that both hosts run checks
    hosts = [start_worker(name, host_env(tmp_path / name, redis_url, queue,
                                         HALLMARK_SCAN_MIN_BATCH="1"), tmp_path / f"{name}.log")
             for name in ("host-a", "host-b")]
    try:
        with use_broker(redis_url, queue):
            r = alice.api.post("/api/verifications/", {"url": f"{base}/hosts.safetensors"},
                               format="json")
            v = wait_for_verification(r.json()["id"], alice.api)
        assert v["status"] == "done", (v, [h.text()[-2000:] for h in hosts])
        wait_for(lambda: all("check v=" in h.text() for h in hosts), "both hosts to log checks")
    finally:
        for h in hosts:
            h.stop()
    row = Verification.objects.get(public_id=v["id"])
    checks = CheckResult.objects.filter(verification=row)
    assert v["progress"] == "8/8" and checks.count() == 8
    assert list(checks.exclude(status="checked").values_list("error", flat=True)) == []
    for h in hosts:  # each host holds the suspect once, in its own cache
        assert "check v=" in h.text()
        assert os.listdir(tmp_path / h.name / "cache" / "sha256") == [row.suspect.sha256]
    report = client.get(f"/api/reports/{v['report']}").json()
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert hallmark(["audit", str(path)]) == 0
    verdict = json.loads(base64.b64decode(report["envelope"]["payload"]))["predicate"]["verdict"]
    assert verdict["outcome"] == "not attributed" and verdict["checks_missing"] == 0
