"""DSSE v1 envelopes: PAE, signing and verification."""
import base64

import nacl.signing
import pytest

from verifier.evidence.dsse import PAYLOAD_TYPE_INTOTO, pae, sign_envelope, verify_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, b64

REGISTRY, OWNER, OUTSIDER = (Identity.from_seed(bytes([i]) * 32) for i in (1, 2, 3))
TRUSTED = {REGISTRY.keyid: REGISTRY.public_key, OWNER.keyid: OWNER.public_key}
BOTH = {REGISTRY.keyid, OWNER.keyid}


def test_pae_matches_the_dsse_spec_test_vector():
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_pae_counts_bytes_not_characters():
    assert pae("t/é", b"\x00\xff") == b"DSSEv1 4 t/\xc3\xa9 2 \x00\xff"


def test_it_signs_the_pae_so_nacl_alone_can_check_it():
    env = sign_envelope(b'{"a":1}', PAYLOAD_TYPE_INTOTO, [REGISTRY])
    assert env["payload"] == base64.b64encode(b'{"a":1}').decode()
    signed = b"DSSEv1 28 application/vnd.in-toto+json 7 " + b'{"a":1}'
    nacl.signing.VerifyKey(REGISTRY.public_key).verify(
        signed, base64.b64decode(env["signatures"][0]["sig"]))
    assert env["signatures"][0]["keyid"] == REGISTRY.keyid


def test_it_returns_exactly_the_verified_payload_bytes():
    payload = b'{"b": 2,  "a": 1}'  # not canonical: must come back untouched
    env = sign_envelope(payload, PAYLOAD_TYPE_INTOTO, [REGISTRY, OWNER])
    assert verify_envelope(env, TRUSTED, BOTH) == payload


def test_it_accepts_url_safe_base64_as_dsse_requires():
    env = sign_envelope(b"\xfb\xff" * 20, "x/y", [REGISTRY])
    env["payload"] = base64.urlsafe_b64encode(b"\xfb\xff" * 20).decode().rstrip("=")
    env["signatures"][0]["sig"] = env["signatures"][0]["sig"].replace("+", "-").replace("/", "_")
    assert verify_envelope(env, TRUSTED, {REGISTRY.keyid}) == b"\xfb\xff" * 20


def test_it_ignores_unknown_envelope_fields():
    env = sign_envelope(b"p", "x/y", [REGISTRY]) | {"extension": {"kind": "x"}}
    assert verify_envelope(env, TRUSTED) == b"p"


def test_it_rejects_a_signature_by_an_unknown_key():
    env = sign_envelope(b"p", "x/y", [REGISTRY, OUTSIDER])
    with pytest.raises(EvidenceError, match="unknown key"):
        verify_envelope(env, TRUSTED, {REGISTRY.keyid})


def test_it_rejects_a_removed_signature():
    env = sign_envelope(b"p", "x/y", [REGISTRY, OWNER])
    env["signatures"] = [s for s in env["signatures"] if s["keyid"] != OWNER.keyid]
    with pytest.raises(EvidenceError, match=f"signature removed.*{OWNER.keyid[:16]}"):
        verify_envelope(env, TRUSTED, BOTH)


@pytest.mark.parametrize("change", ["payload", "payloadType", "sig", "keyid swap"])
def test_it_rejects_a_bad_signature_after_any_change(change):
    env = sign_envelope(b"payload", "x/y", [REGISTRY, OWNER])
    if change == "payload":
        env["payload"] = b64(b"payloaD")
    elif change == "payloadType":
        env["payloadType"] = "x/z"
    elif change == "sig":
        raw = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
        raw[0] ^= 1
        env["signatures"][0]["sig"] = b64(bytes(raw))
    else:
        a, b = env["signatures"]
        a["keyid"], b["keyid"] = b["keyid"], a["keyid"]
    with pytest.raises(EvidenceError, match="bad signature"):
        verify_envelope(env, TRUSTED, BOTH)


@pytest.mark.parametrize("mutate,match", [
    (lambda e: "not an object", "expected a JSON object"),
    (lambda e: {k: v for k, v in e.items() if k != "payload"}, "'payload' field is missing"),
    (lambda e: e | {"payloadType": ""}, "payloadType"),
    (lambda e: e | {"payload": "not base64!"}, "payload: not base64"),
    (lambda e: e | {"signatures": []}, "non-empty list"),
    (lambda e: e | {"signatures": ["x"]}, "signatures\\[0\\] must be an object"),
    (lambda e: e | {"signatures": [{"sig": e["signatures"][0]["sig"]}]}, "no keyid"),
    (lambda e: e | {"signatures": [{"keyid": "k", "sig": 5}]}, "sig must be a base64"),
    (lambda e: e | {"signatures": [{"keyid": "k", "sig": "%%"}]}, "sig: not base64"),
    (lambda e: e | {"signatures": e["signatures"] * 2}, "signs twice"),
])
def test_it_rejects_a_malformed_envelope(mutate, match):
    env = mutate(sign_envelope(b"p", "x/y", [REGISTRY]))
    with pytest.raises(EvidenceError, match="malformed envelope: .*" + match):
        verify_envelope(env, TRUSTED, {REGISTRY.keyid})


def test_it_rejects_a_trusted_key_listed_under_another_keyid():
    env = sign_envelope(b"p", "x/y", [REGISTRY])
    with pytest.raises(EvidenceError, match="list keys under keyid_of"):
        verify_envelope(env, {REGISTRY.keyid: OWNER.public_key}, set())


def test_it_rejects_a_required_signer_it_was_not_told_to_trust():
    env = sign_envelope(b"p", "x/y", [REGISTRY])
    with pytest.raises(EvidenceError, match="not among the trusted keys"):
        verify_envelope(env, {REGISTRY.keyid: REGISTRY.public_key}, {OWNER.keyid})


@pytest.mark.parametrize("ids,ptype,match", [([], "x/y", "at least one"),
                                             ([REGISTRY, REGISTRY], "x/y", "twice"),
                                             ([REGISTRY], "", "payloadType")])
def test_signing_rejects_bad_arguments(ids, ptype, match):
    with pytest.raises(EvidenceError, match=match):
        sign_envelope(b"p", ptype, ids)
