import base64

from django.conf import settings

from registry import translog
from registry.identities import registry_identity
from verifier.evidence import merkle, note


def _register(actor, n):  # type: ignore[no-untyped-def]
    for i in range(n):
        actor.api.post("/api/models/", {"name": f"m{i}"}, format="json")


def test_anyone_reads_the_signed_checkpoint_and_proofs_that_verify(alice, client):
    _register(alice, 6)
    text = client.get("/api/log/checkpoint").content.decode()
    body = note.verify_note(text, [(settings.HALLMARK_LOG_ORIGIN, registry_identity().public_key)])
    cp = note.parse_checkpoint(body)
    assert cp.size == 6
    entry = client.get("/api/log/entries/4").json()
    leaf = merkle.leaf_hash(base64.b64decode(entry["entry"]))
    proof = client.get("/api/log/inclusion", {"index": 4, "size": 6}).json()
    assert merkle.verify_inclusion(leaf, 4, 6, [base64.b64decode(h) for h in proof["hashes"]], cp.root)
    old_root = bytes(translog.checkpoint(3).root)
    cons = client.get("/api/log/consistency", {"old": 3, "new": 6}).json()
    assert merkle.verify_consistency(3, 6, old_root, cp.root,
                                     [base64.b64decode(h) for h in cons["hashes"]])


def test_proof_requests_outside_the_log_get_a_clear_400(alice, client):
    _register(alice, 2)
    r = client.get("/api/log/inclusion", {"index": 5, "size": 9})
    assert r.status_code == 400 and "the log has 2 entries" in r.json()["detail"]
    r = client.get("/api/log/consistency", {"old": "x", "new": 2})
    assert r.status_code == 400 and "whole number" in r.json()["errors"]["old"][0]
    assert client.get("/api/log/entries/99").status_code == 404


def test_the_registry_key_is_published_as_a_vkey_that_pins_reports(db, client):
    from verifier.evidence.note import parse_vkey, verify_checkpoint

    text = client.get("/api/log/vkey").content.decode().strip()
    name, key = parse_vkey(text)
    assert name == settings.HALLMARK_LOG_ORIGIN
    note = client.get("/api/log/checkpoint").content.decode()
    verify_checkpoint(note, settings.HALLMARK_LOG_ORIGIN, key)  # the checkpoint's signer
    assert text in client.get("/").content.decode()  # and in every page's footer
