"""The ambiguity attack: a thief marks the stolen model with her own key, commits it late.

(A key fitted to the stolen weights, bits := what they carry, can no longer be built: keys
re-derive their bits from the seed. The thief's way left is a real mark of her own.)"""
from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from safetensors.torch import save

from registry import reporting
from registry.models import Commitment, Report, Verification
from registry.submission import submit
from tests.hostile.loopback import LoopbackServer, send
from tests.registry.conftest import make_actor
from verifier import toy
from verifier.audit import audit
from verifier.schemes import lsb, uchida
from workers import tasks


def _commit(actor, blob: bytes) -> None:  # type: ignore[no-untyped-def]
    model_id = actor.api.post("/api/models/", {"name": "digits"}, format="json").json()["id"]
    f = io.BytesIO(blob)
    f.name = "key"
    assert actor.api.post(f"/api/models/{model_id}/commitments/", {"key": f},
                          format="multipart").status_code == 201


def _verify(owner, url: str, capture) -> Verification:  # type: ignore[no-untyped-def]
    with capture(execute=False):
        v = submit(owner, url)
    with capture(execute=False):
        tasks.fetch.run(v.pk)
    for c in Commitment.objects.all():
        with capture(execute=False):
            tasks.check.run(v.pk, c.pk)
    tasks.finalize.run(v.pk)
    v.refresh_from_db()
    return v


@pytest.mark.django_db
def test_the_report_names_the_true_owner_and_flags_the_late_forgery(
        settings, tmp_path, django_capture_on_commit_callbacks):
    settings.HALLMARK_CACHE_DIR = tmp_path
    split = toy.digits(seed=0)
    torch.manual_seed(0)
    model = toy.MLP()
    alice, mallory = make_actor("alice"), make_actor("mallory")
    key = uchida.generate_key(uchida.Params(bits=128, layers=("fc1.weight", "fc2.weight")), 1, model=model)
    model = uchida.embed(toy.train_digits(model, split, epochs=5),
                         key, data=list(toy.batches(split.x_train, split.y_train)), epochs=20)
    _commit(alice, key.to_bytes())
    # The thief marks the stolen copy with a post-training signature of her own (lsb: only the
    # lowest mantissa bits change, so the owner's mark is untouched), and serves that copy.
    fake = lsb.generate_key(lsb.Params(), 2, model=model)
    stolen = lsb.embed(model, fake)
    body = save({k: v.contiguous() for k, v in stolen.state_dict().items()})
    server = LoopbackServer()
    server.route("/stolen.safetensors", lambda h, _: send(h, 200, body))
    try:
        url = server.url("/stolen.safetensors")
        first = _verify(alice.owner, url, django_capture_on_commit_callbacks)  # first sighting
        _commit(mallory, fake.to_bytes())  # after the copy was first seen
        second = _verify(mallory.owner, url, django_capture_on_commit_callbacks)
    finally:
        server.close()
    assert first.status == second.status == "done"
    pred = reporting.statement_of(Report.objects.get(verification=second))["predicate"]
    verdict = pred["verdict"]
    assert len(verdict["matching_commitments"]) == 2 and verdict["disputed"]
    assert verdict["owner_keyid"] == alice.owner.keyid
    forged = Commitment.objects.get(model__owner=mallory.owner).digest
    assert verdict["without_priority"] == [forged]
    assert verdict["earliest_commitment"] == Commitment.objects.get(model__owner=alice.owner).digest
    assert pred["suspect"]["first_seen"] == reporting.rfc3339(first.suspect.fetched_at)
    doc = reporting.report_document(Report.objects.get(verification=second))
    assert json.loads(base64.b64decode(doc["envelope"]["payload"]))["predicate"] == pred
    result = audit(json.loads(json.dumps(doc)))
    assert result.ok, result.checks
