"""A worker host dies (SIGKILL of its main process) in the middle of a fetch: its lease lapses,
beat's sweeper re-drives the fetch, the other host does it, and the verification completes
with one report; the broker's visibility timeout (21 minutes) plays no part."""
from __future__ import annotations

import io
import os
import threading
import time

import pytest
import torch

from registry.models import LogEntry, Report, Verification
from tests.broker import use_broker
from tests.hostile.loopback import LoopbackServer, send
from tests.integration.processes import host_env, start_beat, start_worker, wait_for
from tests.integration.test_flow import wait_for_verification
from tests.keys import uchida_key_blob
from tests.registry.conftest import make_actor
from verifier import toy

pytestmark = pytest.mark.django_db(transaction=True)
LEASE, SWEEP = 3, 1  # seconds: short, so the test runs in seconds (defaults: 30 and 15)


def test_a_fetch_on_a_host_killed_with_sigkill_is_taken_over_within_the_lease(
        django_db_setup, redis_url, tmp_path):
    from safetensors.torch import save

    torch.manual_seed(3)
    body = save({k: v.contiguous() for k, v in toy.MLP().state_dict().items()})
    gone = threading.Event()
    server = LoopbackServer()

    def serve(h, _):  # type: ignore[no-untyped-def]
        if len(server.seen) == 1:
            gone.wait(120)  # the first download hangs until its host has been killed
        send(h, 200, body)

    url = server.route("/m.safetensors", serve)
    alice = make_actor("alice")
    model_id = alice.api.post("/api/models/", {"name": "m"}, format="json").json()["id"]
    for seed in range(2):
        f = io.BytesIO(uchida_key_blob(seed=seed))
        f.name = "k"
        alice.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
    queue = f"hallmark-faults-{os.getpid()}"
    env = {"HALLMARK_LEASE_SECONDS": str(LEASE), "HALLMARK_SWEEP_INTERVAL": str(SWEEP)}
    procs = [start_beat(host_env(tmp_path / "beat", redis_url, queue, **env), tmp_path / "beat.log")]
    try:
        hosts = [start_worker(name, host_env(tmp_path / name, redis_url, queue, **env),
                              tmp_path / f"{name}.log") for name in ("host-a", "host-b")]
        procs += hosts
        # the whole exchange inside: leaving use_broker deletes the queue, and with it a
        # message no host has taken yet (on a loaded machine, the fetch itself)
        with use_broker(redis_url, queue):
            r = alice.api.post("/api/verifications/", {"url": url}, format="json")
            started = "Task workers.fetch["
            wait_for(lambda: len(server.seen) == 1 and any(started in h.text() for h in hosts),
                     "a host to start the fetch")
            victim, survivor = hosts if started in hosts[0].text() else hosts[::-1]
            killed = time.monotonic()
            victim.kill()
            v = wait_for_verification(r.json()["id"], alice.api, timeout=120)
            recovered = time.monotonic() - killed
    finally:
        gone.set()
        for p in procs:
            p.stop()
        server.close()
    assert v["status"] == "done" and v["progress"] == "2/2", v
    assert "fetch v=" in survivor.text() and "fetch v=" not in victim.text()
    row = Verification.objects.get(public_id=r.json()["id"])
    assert Report.objects.filter(verification=row).count() == 1
    assert LogEntry.objects.filter(kind="report").count() == 1
    print(f"\nkill -9 of the fetching host's main process -> report in {recovered:.1f} s "
          f"(lease {LEASE} s, sweep every {SWEEP} s)")


def test_a_fetch_whose_database_connections_are_cut_mid_task_is_retried_and_completes(
        django_db_setup, redis_url, tmp_path):
    """While a fetch downloads, the server side of every worker connection is terminated (as
    by a PostgreSQL restart): the task meets the dead connection, releases its claim on a new
    one, is retried with backoff and completes, without the sweeper (no beat here)."""
    from django.db import connection
    from safetensors.torch import save

    torch.manual_seed(4)
    body = save({k: v.contiguous() for k, v in toy.MLP().state_dict().items()})
    cut = threading.Event()
    server = LoopbackServer()

    def serve(h, _):  # type: ignore[no-untyped-def]
        if len(server.seen) == 1:
            cut.wait(120)  # the first download waits until the connections are cut
        send(h, 200, body)

    url = server.route("/m.safetensors", serve)
    alice = make_actor("alice")
    queue = f"hallmark-cut-{os.getpid()}"
    host = start_worker("host-c", host_env(tmp_path / "host-c", redis_url, queue),
                        tmp_path / "host-c.log")
    try:
        with use_broker(redis_url, queue):
            r = alice.api.post("/api/verifications/", {"url": url}, format="json")
            wait_for(lambda: len(server.seen) == 1, "the fetch to start", host)
            with connection.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                            "datname = current_database() AND pid <> pg_backend_pid()")
                assert cur.fetchall(), "the worker held no connection to cut"
            cut.set()
            v = wait_for_verification(r.json()["id"], alice.api, timeout=120)
    finally:
        cut.set()
        host.stop()
        server.close()
    assert v["status"] == "done", host.text()[-3000:]
    assert "Task workers.fetch[" in host.text() and " retry: Retry in " in host.text()
    assert len(server.seen) == 2  # downloaded again by the retry (the first was not recorded)
