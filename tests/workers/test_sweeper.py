"""Nothing stays stuck: the sweeper re-drives every step no live worker holds, and the tasks
retry infrastructure failures instead of reporting them.

Tasks run in this process on the real database; what the sweeper sends goes through the real
Redis broker to a private queue and is read back. Time is passed to `sweep(now=...)`, so no
test sleeps. (A real worker killed with SIGKILL: tests/integration/test_faults.py.)
"""
from __future__ import annotations

import base64
import io
import json
from datetime import timedelta

import pytest
import torch
from django.conf import settings
from django.utils import timezone

from registry.models import CheckResult, Report, Verification
from registry.submission import submit
from tests.broker import closed_port_url, use_broker
from tests.hostile.loopback import send
from tests.keys import uchida_key_blob
from tests.registry.conftest import make_actor
from verifier import toy
from workers import sweeper, tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def cache(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-a"
    return settings.HALLMARK_CACHE_DIR


def later(seconds: float = 0.0):  # type: ignore[no-untyped-def]
    """A moment past the re-drive deadline (plus `seconds`)."""
    return timezone.now() + timedelta(seconds=settings.HALLMARK_REDRIVE_AFTER + 1 + seconds)


def suspect_url(server) -> str:  # type: ignore[no-untyped-def]
    from safetensors.torch import save

    torch.manual_seed(5)
    body = save({k: v.contiguous() for k, v in toy.MLP().state_dict().items()})
    server.route("/m.safetensors", lambda h, _: send(h, 200, body))
    return server.url("/m.safetensors")


def _registered(n: int):  # type: ignore[no-untyped-def]
    alice = make_actor("alice")
    model_id = alice.api.post("/api/models/", {"name": "m"}, format="json").json()["id"]
    for seed in range(n):
        f = io.BytesIO(uchida_key_blob(seed=seed))
        f.name = "k"
        r = alice.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
        assert r.status_code == 201
    return alice


def _fetched(server, django_capture_on_commit_callbacks, n: int = 2) -> Verification:  # type: ignore[no-untyped-def]
    """A verification whose fetch committed "checking" and whose worker died before sending
    the checks (the on-commit sends are dropped)."""
    alice = _registered(n)
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, suspect_url(server))
    with django_capture_on_commit_callbacks(execute=False):
        tasks.fetch.run(v.pk)
    v.refresh_from_db()
    return v


def run_messages(  # type: ignore[no-untyped-def]
        messages, django_capture_on_commit_callbacks) -> None:
    """Run each message's task here, as a worker would (what they send goes to the broker)."""
    for name, args in messages:
        with django_capture_on_commit_callbacks(execute=True):
            getattr(tasks, name.split(".")[1]).run(*args)


def signed_predicate(v: Verification) -> dict:
    envelope = json.loads(Report.objects.get(verification=v).envelope)
    return json.loads(base64.b64decode(envelope["payload"]))["predicate"]


def test_a_submission_made_while_the_broker_was_down_is_sent_by_the_next_sweep(
        broker, django_capture_on_commit_callbacks):
    alice = make_actor("alice")
    with use_broker(closed_port_url()), django_capture_on_commit_callbacks(execute=True):
        v = submit(alice.owner, "http://127.0.0.1:9/m.safetensors")
    v.refresh_from_db()
    assert v.status == "queued" and v.driven_at is None  # kept, marked for the sweeper
    assert sweeper.sweep() == {"fetch": 1, "check": 0, "finalize": 0}
    assert broker.take() == [("workers.fetch", [v.pk])]
    assert sweeper.sweep() == {"fetch": 0, "check": 0, "finalize": 0}  # sent once, not again
    assert broker.take() == []


def test_a_worker_killed_after_saving_checking_but_before_queueing_the_checks_is_repaired(
        server, cache, broker, django_capture_on_commit_callbacks):
    v = _fetched(server, django_capture_on_commit_callbacks, n=3)
    assert v.status == "checking" and v.checks_expected == 3
    assert broker.take() == []  # the checks were never sent
    assert set(CheckResult.objects.values_list("status", flat=True)) == {"pending"}
    assert sweeper.sweep()["check"] == 0  # not before the deadline: the send may be in flight
    assert sweeper.sweep(now=later()) == {"fetch": 0, "check": 3, "finalize": 0}
    checks = broker.take()
    assert checks == [("workers.check_batch", [v.pk, 0])]  # 3 checks: one batch, re-sent whole
    with use_broker() as next_step:
        run_messages(checks, django_capture_on_commit_callbacks)
        assert next_step.take() == [("workers.finalize", [v.pk])]
    tasks.finalize.run(v.pk)
    v.refresh_from_db()
    assert v.status == "done" and v.progress == "3/3"
    assert signed_predicate(v)["verdict"]["outcome"] == "not attributed"


def test_a_fetch_whose_worker_died_is_re_driven_once_its_lease_lapses(
        server, cache, broker, django_capture_on_commit_callbacks):
    alice = _registered(1)
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, suspect_url(server))
    now, lease = timezone.now(), timedelta(seconds=settings.HALLMARK_LEASE_SECONDS)
    # sent, then claimed by a worker that renews its lease
    Verification.objects.filter(pk=v.pk).update(status="fetching", driven_at=now - 2 * lease,
                                                lease_until=now + lease)
    assert sweeper.sweep()["fetch"] == 0  # the lease is live: a worker is fetching it
    with django_capture_on_commit_callbacks(execute=False):
        tasks.fetch.run(v.pk)  # a duplicate delivery meanwhile does nothing
    assert server.seen == []
    Verification.objects.filter(pk=v.pk).update(lease_until=now - timedelta(seconds=1))  # died
    assert sweeper.sweep()["fetch"] == 1
    assert sweeper.sweep()["fetch"] == 0  # re-driven once per lapse
    assert broker.take() == [("workers.fetch", [v.pk])]
    with django_capture_on_commit_callbacks(execute=False):
        tasks.fetch.run(v.pk)
    v.refresh_from_db()
    assert v.status == "checking" and CheckResult.objects.filter(verification=v).count() == 1


def test_a_check_whose_worker_died_runs_again_and_counts_the_loss(
        server, cache, broker, django_capture_on_commit_callbacks):
    v = _fetched(server, django_capture_on_commit_callbacks, n=1)
    row = CheckResult.objects.get()
    assert row.claim_run(timedelta(seconds=settings.HALLMARK_LEASE_SECONDS))  # then it died
    assert sweeper.sweep()["check"] == 0 and broker.take() == []
    died = timezone.now() - timedelta(seconds=1)
    CheckResult.objects.filter(pk=row.pk).update(lease_until=died, driven_at=died - timedelta(
        seconds=settings.HALLMARK_LEASE_SECONDS))
    assert sweeper.sweep()["check"] == 1
    assert broker.take() == [("workers.check", [v.pk, row.commitment_id])]
    with django_capture_on_commit_callbacks(execute=False):
        tasks.check.run(v.pk, row.commitment_id)
    row.refresh_from_db()
    assert row.status == "checked" and row.attempts == 2


def test_a_check_lost_too_often_is_an_error_and_the_verdict_inconclusive(
        server, cache, broker, django_capture_on_commit_callbacks):
    v = _fetched(server, django_capture_on_commit_callbacks, n=2)
    lost, ok = CheckResult.objects.order_by("pk")
    CheckResult.objects.filter(pk=lost.pk).update(
        status="running", attempts=settings.HALLMARK_CHECK_MAX_LOST,
        lease_until=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=False):
        tasks.check.run(v.pk, ok.commitment_id)
    with django_capture_on_commit_callbacks(execute=False) as then:
        tasks.check.run(v.pk, lost.commitment_id)
    lost.refresh_from_db()
    assert lost.status == "error" and "lost 3 times" in lost.error
    assert len(then) == 1  # finalize
    tasks.finalize.run(v.pk)
    verdict = signed_predicate(v)["verdict"]
    assert verdict["outcome"] == "inconclusive" and verdict["checks_missing"] == 1
    assert not verdict["attributed"]


def test_finalize_never_signs_while_checks_are_missing(
        server, cache, broker, django_capture_on_commit_callbacks):
    v = _fetched(server, django_capture_on_commit_callbacks, n=2)
    Verification.objects.filter(pk=v.pk).update(status="finalizing")
    tasks.finalize.run(v.pk)
    v.refresh_from_db()
    assert v.status == "checking" and not Report.objects.exists()


def test_a_finalize_that_could_not_be_sent_is_sent_by_the_sweeper(
        server, cache, broker, django_capture_on_commit_callbacks):
    v = _fetched(server, django_capture_on_commit_callbacks, n=1)
    row = CheckResult.objects.get()
    with use_broker(closed_port_url()), django_capture_on_commit_callbacks(execute=True):
        tasks.check.run(v.pk, row.commitment_id)  # finishes the count; the send fails
    v.refresh_from_db()
    assert v.status == "finalizing" and v.driven_at is None
    assert sweeper.sweep()["finalize"] == 1
    assert broker.take() == [("workers.finalize", [v.pk])]
    tasks.finalize.run(v.pk)
    v.refresh_from_db()
    assert v.status == "done" and Report.objects.count() == 1


def test_an_infrastructure_failure_is_retried_never_recorded(
        server, cache, broker, settings, tmp_path, django_capture_on_commit_callbacks):
    v = _fetched(server, django_capture_on_commit_callbacks, n=1)
    row = CheckResult.objects.get()
    blocked = tmp_path / "host-b"
    blocked.write_bytes(b"")  # another host whose cache folder cannot be created
    settings.HALLMARK_CACHE_DIR = blocked
    with pytest.raises(OSError):  # a worker would retry it with backoff (autoretry_for)
        tasks.check.run(v.pk, row.commitment_id)
    row.refresh_from_db()
    assert row.status == "pending" and row.attempts == 0 and row.error == ""  # released
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-c"
    with django_capture_on_commit_callbacks(execute=False):
        tasks.check.run(v.pk, row.commitment_id)  # the retry, on a working host
    row.refresh_from_db()
    assert row.status == "checked" and row.attempts == 1
