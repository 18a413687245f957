"""Reports an auditor can check with only the report, the registry's vkey and a witness's vkey:
cosigned checkpoints from a real witness on 127.0.0.1, owner entries at sign-up, commitment and
owner proofs, countersignatures by bring-your-own-key owners, and ?since= on one snapshot."""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from registry import reporting
from registry.identities import registry_identity
from registry.models import (
    CHECKED,
    LogEntry,
    Owner,
    Report,
    Suspect,
    Verification,
)
from registry.registration import add_commitment, register_model
from tests.keys import uchida_key_blob
from verifier.audit import audit
from verifier.evidence import requests
from verifier.evidence.canonical import canonical_json
from verifier.evidence.cosignature import Witness as WitnessKey
from verifier.evidence.cosignature import verify_cosignatures
from verifier.evidence.identity import Identity, b64
from verifier.evidence.logentry import parse_entry
from verifier.evidence.owners import countersign
from verifier.evidence.report import render_report
from verifier.witness.protocol import Witness
from verifier.witness.server import make_server
from verifier.witness.state import WitnessState

CAROL = Identity.from_seed(bytes([42]) * 32)  # keeps her own key
W_ID = Identity.from_seed(bytes([43]) * 32)
W_KEY = WitnessKey("witness.test/w1", W_ID.public_key)


@pytest.fixture
def witness(settings, tmp_path: Path) -> Iterator[WitnessState]:
    """A real witness on 127.0.0.1 following this registry's log, configured in the registry."""
    state = WitnessState(tmp_path / "witness.json")
    server = make_server(Witness(W_KEY.name, W_ID, {
        settings.HALLMARK_LOG_ORIGIN: [registry_identity().public_key]}, state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    settings.HALLMARK_WITNESSES = [(f"http://127.0.0.1:{server.server_address[1]}", W_KEY.vkey)]
    yield state
    server.shutdown()
    server.server_close()


def _signup(username: str, public_key: bytes | None = None) -> tuple[APIClient, dict]:
    api = APIClient()
    body = {"username": username, "password": "correct horse battery"}
    if public_key is not None:
        body["public_key"] = b64(public_key)
    r = api.post("/api/signup", body, format="json")
    assert r.status_code == 201, r.json()
    api.credentials(HTTP_AUTHORIZATION=f"Token {r.json()['token']}")
    return api, r.json()


def _report(owner: Owner, identity: Identity | None = None) -> Report:
    """A finished verification of a suspect against `owner`'s registered model."""
    sig = (None if identity is None else
           requests.sign_request(identity, requests.model_request("digits", "1")))
    model = register_model(owner, name="digits", owner_signature=sig)
    blob = uchida_key_blob()
    csig = (None if identity is None else requests.sign_request(identity, requests.commitment_request(
        str(model.public_id), "uchida", hashlib.sha256(blob).hexdigest())))
    c = add_commitment(model, blob, owner_signature=csig)
    now = timezone.now()
    suspect = Suspect.objects.create(url="http://127.0.0.1/stolen.safetensors",
                                     sha256=hashlib.sha256(b"stolen").hexdigest(), size=6,
                                     format="safetensors", fetched_at=now)
    v = Verification.objects.create(suspect=suspect, requested_by=owner, target=model,
                                    status="done", checks_expected=1, checks_done=1)
    v.fetched_at = v.finished_at = timezone.now()
    v.save()
    v.checks.create(commitment=c, scheme="uchida", status=CHECKED, statistic=64, n=64,
                    log10_p=-19.3, null="binomial(64, 1/2)", claim="the bits match")
    return reporting.finalize(v)


def _served(api: APIClient, report: Report, since: int | None = None) -> bytes:
    url = f"/api/reports/{report.public_id}" + ("" if since is None else f"?since={since}")
    r = api.get(url)
    assert r.status_code == 200, r.content
    return r.content


@pytest.mark.django_db
def test_signup_by_api_and_web_logs_a_registry_signed_owner_entry():
    _, body = _signup("alice")
    owner = Owner.objects.get(keyid=body["keyid"])
    entry = parse_entry(bytes(LogEntry.objects.get(index=owner.log_index).body))
    assert (entry["type"], entry["keyid"], entry["public_key"]) == ("owner", owner.keyid,
                                                                   body["public_key"])
    statement = json.loads(owner.statement)
    assert len(statement["signatures"]) == 2  # the registry, and the escrowed key's possession
    _, carol = _signup("carol", CAROL.public_key)
    assert len(json.loads(Owner.objects.get(keyid=carol["keyid"]).statement)["signatures"]) == 1
    web = APIClient()
    r = web.post("/signup/", {"username": "dave", "password1": "correct horse battery 1",
                              "password2": "correct horse battery 1"})
    assert r.status_code == 302
    assert Owner.objects.get(user__username="dave").log_index is not None


@pytest.mark.django_db
def test_the_published_checkpoint_carries_the_witness_cosignature(witness):
    _signup("alice")
    note = APIClient().get("/api/log/checkpoint").content.decode()
    [cosigned] = verify_cosignatures(note, [W_KEY])
    assert cosigned.witness == W_KEY
    assert APIClient().get("/api/log/witnesses").content.decode() == W_KEY.vkey + "\n"
    assert witness.read()  # the witness persisted the checkpoint it cosigned


@pytest.mark.django_db
def test_a_report_audits_offline_with_only_the_registry_vkey_and_a_witness_vkey(witness):
    api, body = _signup("alice")
    report = _report(Owner.objects.get(keyid=body["keyid"]))
    vkey = APIClient().get("/api/log/vkey").content.decode()
    res = audit(_served(api, report), registry_key=registry_identity().public_key,
                witnesses=[WitnessKey(W_KEY.name, W_KEY.public_key)], quorum=1, strict_bytes=True)
    assert res.ok, res.failure
    names = [c.name for c in res.checks]
    assert {"priority", "commitment log", "priority proofs", "owner log", "witnesses"} <= set(names)
    assert vkey.startswith("hallmark.localhost/log+")


@pytest.mark.django_db
def test_without_a_reachable_witness_the_log_still_serves_and_the_quorum_fails(settings):
    settings.HALLMARK_WITNESSES = [("http://127.0.0.1:9", W_KEY.vkey)]
    settings.HALLMARK_WITNESS_TIMEOUT = 2.0
    api, body = _signup("alice")
    report = _report(Owner.objects.get(keyid=body["keyid"]))
    served = _served(api, report)
    assert audit(served).ok
    assert audit(served, witnesses=[W_KEY]).failure.name == "witnesses"


@pytest.mark.django_db
def test_since_uses_the_same_checkpoint_as_the_report(witness):
    api, body = _signup("alice")
    report = _report(Owner.objects.get(keyid=body["keyid"]))
    first = audit(_served(api, report))
    _signup("bob")  # the log grows
    res = audit(_served(api, report, since=first.checkpoint.size),
                since_checkpoint=first.checkpoint_note, witnesses=[W_KEY])
    assert res.ok, res.failure
    assert res.checkpoint.size == first.checkpoint.size + 1


@pytest.mark.django_db
def test_a_byok_owner_countersigns_and_the_served_report_carries_it(witness):
    api, body = _signup("carol", CAROL.public_key)
    report = _report(Owner.objects.get(keyid=body["keyid"]), CAROL)
    envelope = json.loads(report.envelope)
    assert [s["keyid"] for s in envelope["signatures"]] == [registry_identity().keyid]
    url = f"/api/reports/{report.public_id}/signatures"
    wrong = countersign(envelope, Identity.from_seed(bytes([1]) * 32))
    assert api.post(url, {"sig": wrong}, format="json").status_code == 400
    outsider, _ = _signup("mallory")
    assert outsider.post(url, {"sig": countersign(envelope, CAROL)},
                         format="json").status_code == 403
    r = api.post(url, {"sig": countersign(envelope, CAROL)}, format="json")
    assert r.status_code == 201, r.json()
    assert api.post(url, {"sig": countersign(envelope, CAROL)},
                    format="json").status_code == 409
    served = _served(api, report)
    res = audit(served, registry_key=registry_identity().public_key, witnesses=[W_KEY])
    assert res.ok, res.failure
    check = next(c for c in res.checks if c.name == "countersignatures")
    assert f"owner {CAROL.keyid[:16]}… at " in check.reason
    doc = json.loads(served)
    doc["countersignatures"][0]["signed_at"] = "2020-01-01T00:00:00Z"
    assert audit(canonical_json(doc)).failure.name == "countersignatures"
    page = APIClient().get(f"/reports/{report.public_id}/").content.decode()
    assert "Countersigned by owners" in page and CAROL.keyid in page


@pytest.mark.django_db
def test_while_a_witness_is_down_reports_keep_the_newest_cosigned_checkpoint(witness, settings):
    api, body = _signup("alice")
    report = _report(Owner.objects.get(keyid=body["keyid"]))
    before = audit(_served(api, report), witnesses=[W_KEY])
    assert before.ok, before.failure
    settings.HALLMARK_WITNESSES = [("http://127.0.0.1:9", W_KEY.vkey)]  # the witness goes away
    _signup("bob")  # the log grows; its new checkpoint cannot be cosigned
    after = audit(_served(api, report), witnesses=[W_KEY])
    assert after.ok, after.failure
    assert after.checkpoint == before.checkpoint
    assert APIClient().get("/api/log/checkpoint").content.decode() == before.checkpoint_note


@pytest.mark.django_db(transaction=True)
def test_hallmark_countersign_sends_the_signature_to_the_registry(live_server, tmp_path, capsys):
    from verifier.cli import main
    from verifier.evidence.identity import write_private_key

    api, body = _signup("carol", CAROL.public_key)
    report = _report(Owner.objects.get(keyid=body["keyid"]), CAROL)
    key, path = tmp_path / "carol.key", tmp_path / "report.json"
    write_private_key(key, CAROL)
    path.write_bytes(_served(api, report))
    assert main(["countersign", str(path), "--key", str(key), "--registry", live_server.url,
                 "--report-id", str(report.public_id), "--token", body["token"]]) == 0
    assert "countersignature logged at index" in capsys.readouterr().out
    res = audit(_served(api, report))
    assert res.ok and any(c.name == "countersignatures" for c in res.checks), res.failure


@pytest.mark.django_db
def test_a_scan_sized_report_carries_proofs_for_attributed_commitments_only(monkeypatch):
    from registry import evidence_proofs

    api, body = _signup("alice")
    report = _report(Owner.objects.get(keyid=body["keyid"]))
    full = json.loads(_served(api, report))
    assert len(full["commitment_proofs"]) == 1
    monkeypatch.setattr(evidence_proofs, "ALL_PROOFS_UP_TO", 0)  # as if it listed thousands
    small = json.loads(render_report(reporting.report_document(report)))  # the GET's bytes are stored
    attributed = {c["commitment"] for c in reporting.statement_of(report)["predicate"]["checks"]
                  if c["decision"] == "attributed"}
    assert {p["digest"] for p in small.get("commitment_proofs", [])} == attributed
    assert audit(canonical_json(small)).ok
