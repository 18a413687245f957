"""No shared filesystem: a host that lacks the suspect fetches it itself, pinned to the digest
of the first fetch, at most once per host (tasks run in this process on the real database;
each "host" is its own cache folder)."""
from __future__ import annotations

import hashlib
import io
import os
import threading
import time

import pytest
import torch

from registry.models import CheckResult, Report, Suspect, Verification
from registry.submission import submit
from tests.hostile.loopback import send
from tests.keys import uchida_key_blob
from tests.registry.conftest import make_actor
from verifier import toy
from workers import suspects, tasks

pytestmark = pytest.mark.django_db


def _weights(seed: int) -> bytes:
    from safetensors.torch import save

    torch.manual_seed(seed)
    return save({k: v.contiguous() for k, v in toy.MLP().state_dict().items()})


def _fetched_on_host_a(server, settings, tmp_path, django_capture_on_commit_callbacks,  # type: ignore[no-untyped-def]
                       bodies: list[bytes]) -> Verification:
    """Host A fetched the suspect (served bodies[0], then bodies[1], ...) and fanned out."""
    served = iter(bodies)
    server.route("/m.safetensors", lambda h, _: send(h, 200, next(served)))
    alice = make_actor("alice")
    model_id = alice.api.post("/api/models/", {"name": "m"}, format="json").json()["id"]
    f = io.BytesIO(uchida_key_blob(seed=1))
    f.name = "k"
    alice.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-a"
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, server.url("/m.safetensors"))
        tasks.fetch.run(v.pk)
    v.refresh_from_db()
    assert v.status == "checking"
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-b"  # the check runs on another host
    return v


def test_a_check_host_without_the_suspect_fetches_it_and_checks_the_same_bytes(
        server, settings, tmp_path, django_capture_on_commit_callbacks):
    body = _weights(5)
    v = _fetched_on_host_a(server, settings, tmp_path, django_capture_on_commit_callbacks,
                           [body, body])
    with django_capture_on_commit_callbacks(execute=False) as then:
        tasks.check.run(v.pk, CheckResult.objects.get().commitment_id)
    assert CheckResult.objects.get().status == "checked" and len(then) == 1
    assert len(server.seen) == 2  # once per host
    assert os.listdir(tmp_path / "host-b" / "sha256") == [v.suspect.sha256]


def test_a_suspect_that_changed_since_its_first_fetch_fails_the_verification_unsigned(
        server, settings, tmp_path, django_capture_on_commit_callbacks):
    v = _fetched_on_host_a(server, settings, tmp_path, django_capture_on_commit_callbacks,
                           [_weights(5), _weights(6)])
    with django_capture_on_commit_callbacks(execute=False) as then:
        tasks.check.run(v.pk, CheckResult.objects.get().commitment_id)
    v.refresh_from_db()
    assert v.status == "failed" and v.error_code == "suspect_changed"
    assert "the suspect changed since it was first fetched" in v.error_message
    assert v.suspect.sha256[:16] in v.error_message  # names the pinned digest
    assert then == [] and not Report.objects.exists()  # no finalize, nothing signed
    assert os.listdir(tmp_path / "host-b" / "sha256") == []  # the other bytes are not kept


def test_a_redelivered_fetch_that_gets_other_bytes_fails_instead_of_re_pinning(
        server, settings, tmp_path, django_capture_on_commit_callbacks):
    first, second = _weights(5), _weights(6)
    served = iter([first, second])
    server.route("/m.safetensors", lambda h, _: send(h, 200, next(served)))
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-a"
    v = submit(make_actor("alice").owner, server.url("/m.safetensors"))
    suspects.prepare(v.suspect)  # the first fetch pins the digest (its worker then died)
    pinned = Suspect.objects.get().sha256
    Verification.objects.filter(pk=v.pk).update(status="queued")
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-b"
    tasks.fetch.run(v.pk)
    v.refresh_from_db()
    assert v.status == "failed" and v.error_code == "suspect_changed"
    assert Suspect.objects.get().sha256 == pinned


def test_children_of_one_host_download_a_suspect_once(server, settings, tmp_path):
    body = _weights(5)

    def slow(h, _):  # type: ignore[no-untyped-def]
        time.sleep(0.3)  # long enough for every thread to be waiting on the lock
        send(h, 200, body)

    server.route("/m.safetensors", slow)
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-a"
    suspect = Suspect.objects.create(url=server.url("/m.safetensors"),
                                     sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    paths, errors = [], []

    def child() -> None:
        try:
            paths.append(suspects.local_file(suspect))
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            errors.append(e)

    threads = [threading.Thread(target=child) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(paths)) == 1 and len(paths) == 4
    assert len(server.seen) == 1  # one download for four children
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-b"
    suspects.local_file(suspect)
    assert len(server.seen) == 2  # another host fetches its own copy
