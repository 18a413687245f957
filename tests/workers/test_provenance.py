"""The fetch task records the suspect's declared provenance and finalize signs it beside the
verdict (tasks run in this process on the real database; suspects served on loopback)."""
from __future__ import annotations

import io

import onnx
import pytest
import torch
from django.test import Client
from django.urls import reverse

from registry import reporting
from registry.identities import owner_identity
from registry.models import CheckResult, Report, Verification
from registry.submission import submit
from tests.hostile.loopback import send
from tests.keys import uchida_key_blob
from tests.registry.conftest import make_actor
from verifier import toy
from verifier.evidence.identity import Identity
from verifier.graphsig import sign_graph
from verifier.owners.onnx_sign import export_torchscript
from workers import tasks

pytestmark = pytest.mark.django_db


def _onnx(tmp_path, signer: Identity | None) -> bytes:  # type: ignore[no-untyped-def]
    path = tmp_path / "m.onnx"
    torch.manual_seed(0)
    export_torchscript(toy.MLP().eval(), (torch.zeros(2, 64),), str(path),
                       input_names=["input"], output_names=["logits"],
                       dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load(str(path))
    if signer is not None:
        model = sign_graph(model, signer)
    return model.SerializeToString()


def _verified(server, django_capture_on_commit_callbacks, body: bytes):  # type: ignore[no-untyped-def]
    """Alice registers an uchida key, submits the served ONNX model; fetch, check, finalize."""
    server.route("/m.onnx", lambda h, _: send(h, 200, body))
    alice = make_actor("alice")
    model_id = alice.api.post("/api/models/", {"name": "m"}, format="json").json()["id"]
    f = io.BytesIO(uchida_key_blob(seed=1))
    f.name = "k"
    alice.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, server.url("/m.onnx"))
        tasks.fetch.run(v.pk)
        tasks.check.run(v.pk, CheckResult.objects.get().commitment_id)
        tasks.finalize.run(v.pk)
    v.refresh_from_db()
    return alice, v


def test_a_graph_signature_by_a_registered_owner_is_pinned_and_signed_beside_the_verdict(
        server, tmp_path, django_capture_on_commit_callbacks):
    alice = make_actor("signer")  # a registered owner whose escrowed key signed the graph
    body = _onnx(tmp_path, owner_identity(alice.owner))
    _, v = _verified(server, django_capture_on_commit_callbacks, body)
    graph = v.provenance["graph_signature"]
    assert (graph["status"], graph["pinned"], graph["owner_keyid"]) == (
        "intact", True, alice.owner.keyid)
    assert v.provenance["model_signing"]["status"] == "absent"
    predicate = reporting.statement_of(Report.objects.get(verification=v))["predicate"]
    assert predicate["provenance"] == v.provenance
    assert predicate["provenance"]["affects_verdict"] is False
    assert predicate["verdict"]["outcome"] == "not attributed"  # the graph signature is no mark
    page = Client().get(reverse("report_detail", args=[Report.objects.get().public_id]))
    text = page.content.decode()
    assert "Declared provenance" in text and "removable by re-export" in text
    assert f"signed by registered owner <code>{alice.owner.keyid}</code>" in text


def test_a_graph_signed_by_an_unregistered_key_shows_integrity_only(
        server, tmp_path, django_capture_on_commit_callbacks):
    body = _onnx(tmp_path, Identity.from_seed(bytes([9]) * 32))
    _, v = _verified(server, django_capture_on_commit_callbacks, body)
    graph = v.provenance["graph_signature"]
    assert (graph["status"], graph["pinned"], graph["owner_keyid"]) == ("intact", False, None)


def test_an_unsigned_onnx_suspect_reports_an_unsigned_graph(
        server, tmp_path, django_capture_on_commit_callbacks):
    _, v = _verified(server, django_capture_on_commit_callbacks, _onnx(tmp_path, None))
    assert v.status == "done"
    assert v.provenance["graph_signature"]["status"] == "unsigned"
    assert Verification.objects.get(pk=v.pk).provenance == v.provenance
