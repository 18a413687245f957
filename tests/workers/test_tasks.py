"""The tasks, run in this process on the real database: claims, refusals, idempotency.

(The same tasks through a real broker and worker process: tests/integration.)"""
from __future__ import annotations

import io
import os
from datetime import timedelta

import pytest
import torch
from django.utils import timezone

from registry.models import CheckResult, Commitment, LogEntry, Report, Verification
from registry.submission import submit
from tests.hostile.loopback import send
from tests.keys import uchida_key_blob
from tests.registry.conftest import make_actor
from verifier import toy
from workers import tasks


@pytest.fixture
def cache(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.HALLMARK_CACHE_DIR = tmp_path / "cache"
    return settings.HALLMARK_CACHE_DIR


def _files(root) -> list[str]:  # type: ignore[no-untyped-def]
    return [f for _, _, names in os.walk(root) for f in names] if root.exists() else []


def _submit(url: str, django_capture_on_commit_callbacks) -> Verification:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=False):
        return submit(make_actor("alice").owner, url)


def _safetensors(model: torch.nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in model.state_dict().items()})


@pytest.mark.django_db
def test_a_loopback_url_is_refused_when_the_policy_forbids_it(
        server, cache, settings, django_capture_on_commit_callbacks):
    settings.HALLMARK_FETCH = {**settings.HALLMARK_FETCH, "allow_loopback": False}
    server.route("/m.safetensors", lambda h, _: send(h, 200, b"never served"))
    v = _submit(server.url("/m.safetensors"), django_capture_on_commit_callbacks)
    tasks.fetch.run(v.pk)
    v.refresh_from_db()
    assert v.status == "failed" and v.error_code == "fetch_failed"
    assert "loopback" in v.error_message and "HALLMARK_FETCH_ALLOW_LOOPBACK" in v.error_message
    assert server.seen == []  # refused on the address, before any connection
    assert not CheckResult.objects.exists() and not Report.objects.exists()
    assert _files(cache) == []


@pytest.mark.django_db
def test_a_download_over_the_cap_stops_there_and_leaves_nothing(
        server, cache, settings, django_capture_on_commit_callbacks):
    settings.HALLMARK_FETCH = {**settings.HALLMARK_FETCH, "max_bytes": 1000}
    server.route("/big.safetensors", lambda h, _: send(h, 200, b"\0" * 5000))
    v = _submit(server.url("/big.safetensors"), django_capture_on_commit_callbacks)
    tasks.fetch.run(v.pk)
    v.refresh_from_db()
    assert v.status == "failed" and "1000-byte cap" in v.error_message
    assert _files(cache) == [] and not CheckResult.objects.exists()


@pytest.mark.django_db
def test_a_file_that_is_no_model_is_refused_with_the_fix(
        server, cache, django_capture_on_commit_callbacks):
    server.route("/m.bin", lambda h, _: send(h, 200, os.urandom(4096)))
    v = _submit(server.url("/m.bin"), django_capture_on_commit_callbacks)
    tasks.fetch.run(v.pk)
    v.refresh_from_db()
    assert v.status == "failed" and v.error_code == "bad_model"
    assert "safetensors" in v.error_message  # names a format to send instead
    assert not CheckResult.objects.exists() and not Report.objects.exists()


@pytest.mark.django_db
def test_a_fetch_claimed_twice_runs_once(server, cache, django_capture_on_commit_callbacks):
    server.route("/m.bin", lambda h, _: send(h, 200, os.urandom(64)))
    v = _submit(server.url("/m.bin"), django_capture_on_commit_callbacks)
    Verification.objects.filter(pk=v.pk).update(status="fetching",
                                                lease_until=timezone.now() + timedelta(seconds=30))
    tasks.fetch.run(v.pk)  # another worker is fetching it right now (its lease is live)
    assert server.seen == []


@pytest.mark.django_db
def test_a_fetch_whose_worker_died_is_taken_over_on_redelivery(
        server, cache, settings, django_capture_on_commit_callbacks):
    server.route("/m.bin", lambda h, _: send(h, 200, os.urandom(64)))
    v = _submit(server.url("/m.bin"), django_capture_on_commit_callbacks)
    died = timezone.now() - timedelta(seconds=1)  # its lease lapsed: no heartbeat any more
    Verification.objects.filter(pk=v.pk).update(status="fetching", lease_until=died)
    tasks.fetch.run(v.pk)
    v.refresh_from_db()
    assert len(server.seen) == 1 and v.status == "failed" and v.error_code == "bad_model"


@pytest.mark.django_db
def test_redelivered_checks_and_finalize_are_harmless(
        server, cache, django_capture_on_commit_callbacks):
    alice = make_actor("alice")
    model_id = alice.api.post("/api/models/", {"name": "m"}, format="json").json()["id"]
    f = io.BytesIO(uchida_key_blob(seed=3))
    f.name = "k"
    alice.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
    torch.manual_seed(5)
    body = _safetensors(toy.MLP())
    server.route("/m.safetensors", lambda h, _: send(h, 200, body))
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, server.url("/m.safetensors"))
    with django_capture_on_commit_callbacks(execute=False) as fanout:
        tasks.fetch.run(v.pk)
    assert len(fanout) == 1  # one group of checks, sent once committed
    v.refresh_from_db()
    assert v.status == "checking" and v.checks_expected == 1
    cid = Commitment.objects.get().pk
    with django_capture_on_commit_callbacks(execute=False) as first:
        tasks.check.run(v.pk, cid)
    with django_capture_on_commit_callbacks(execute=False) as again:
        tasks.check.run(v.pk, cid)  # a redelivered message
    assert len(first) == 1 and len(again) == 0  # finalize enqueued exactly once
    v.refresh_from_db()
    assert v.checks_done == 1 and v.status == "finalizing"
    assert CheckResult.objects.get().status == "checked"
    before = LogEntry.objects.count()
    tasks.finalize.run(v.pk)
    tasks.finalize.run(v.pk)
    v.refresh_from_db()
    assert v.status == "done" and Report.objects.count() == 1
    assert LogEntry.objects.count() == before + 1
