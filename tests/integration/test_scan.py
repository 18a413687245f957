"""A check batch whose host dies (SIGKILL of its main process; Celery's pool child follows it,
PR_SET_PDEATHSIG) mid-batch is taken over by another host once its lease lapses (beat's
sweeper re-drives the batch); every row is stored and counted once, the lost run counted in
`attempts`. (A late run that finds its rows taken over records nothing:
tests/workers/test_scan.py.)"""
from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest

from registry.models import CheckResult, LogEntry, Report, Verification
from tests.broker import use_broker
from tests.hostile.loopback import LoopbackServer, serve_oip
from tests.integration.processes import host_env, start_beat, start_worker, wait_for
from tests.integration.test_flow import wait_for_verification
from tests.registry.conftest import make_actor
from verifier.schemes import trigger_set

pytestmark = pytest.mark.django_db(transaction=True)
LEASE, SWEEP = 3, 1  # seconds: short, so the test runs in seconds (defaults: 30 and 15)


def test_a_batch_on_a_host_killed_with_sigkill_is_taken_over_and_recorded_once(
        django_db_setup, redis_url, tmp_path):
    gone = threading.Event()
    server = LoopbackServer()
    calls = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 1:
            gone.wait(120)  # the first batch's first query hangs until its host is dead
        return np.zeros((len(x), 10), dtype=np.float32)

    url = serve_oip(server, predict)
    alice = make_actor("alice")
    model_id = alice.api.post("/api/models/", {"name": "m"}, format="json").json()["id"]
    for seed in range(2):
        blob = trigger_set.generate_key(trigger_set.Params(n=100, variant="keyed_noise",
                                                           classes=10), seed).to_bytes()
        f = io.BytesIO(blob)
        f.name = "k"
        r = alice.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
        assert r.status_code == 201, r.content
    queue = f"hallmark-scan-{os.getpid()}"
    env = {"HALLMARK_LEASE_SECONDS": str(LEASE), "HALLMARK_SWEEP_INTERVAL": str(SWEEP),
           "HALLMARK_SCAN_SPREAD": "1"}  # both keys in one batch
    procs = [start_beat(host_env(tmp_path / "beat", redis_url, queue, **env), tmp_path / "beat.log")]
    try:
        victim = start_worker("host-a", host_env(tmp_path / "host-a", redis_url, queue, **env),
                              tmp_path / "host-a.log")
        procs.append(victim)
        # the whole exchange inside: leaving use_broker deletes the queue, and with it a
        # message no host has taken yet (on a loaded machine, the fetch itself)
        with use_broker(redis_url, queue):
            r = alice.api.post("/api/verifications/", {"url": url}, format="json")
            wait_for(lambda: len(calls) == 1, "host-a to start the batch", victim)
            victim.kill()  # its pool child dies with it, in the middle of the batch
            survivor = start_worker("host-b", host_env(tmp_path / "host-b", redis_url, queue,
                                                       **env), tmp_path / "host-b.log")
            procs.append(survivor)
            v = wait_for_verification(r.json()["id"], alice.api, timeout=120)
    finally:
        gone.set()
        for p in procs:
            p.stop()
        server.close()
    assert v["status"] == "done" and v["progress"] == "2/2", v
    assert "check v=" in survivor.text() and "check v=" not in victim.text()
    row = Verification.objects.get(public_id=r.json()["id"])
    assert row.checks_done == row.checks_expected == 2
    rows = CheckResult.objects.filter(verification=row)
    assert list(rows.values_list("status", "attempts", "batch")) == [("checked", 2, 0)] * 2
    assert len(set(rows.values_list("runner", flat=True))) == 1  # one run recorded both
    assert Report.objects.filter(verification=row).count() == 1
    assert LogEntry.objects.filter(kind="report").count() == 1
