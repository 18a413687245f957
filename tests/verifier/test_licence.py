"""Licences: AdvParams decryption keys issued to a named licensee, signed by registry and owner."""
import base64
import copy
import json

import pytest
import torch

from verifier import toy
from verifier.evidence.canonical import canonical_json
from verifier.evidence.dsse import sign_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity
from verifier.licence import (
    LICENCE_PAYLOAD_TYPE,
    Licence,
    LicenceError,
    decrypt_with_licence,
    issue_licence,
    licence_signers,
    verify_licence,
    weights_digest,
)
from verifier.schemes import advparams as ap

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core

REGISTRY, OWNER, OUTSIDER = (Identity.from_seed(bytes([i]) * 32) for i in (7, 8, 9))
WHEN = "2026-01-31T12:00:00Z"


def _model_and_encrypted(split, seed):
    torch.manual_seed(seed)
    model = toy.train_digits(toy.MLP(), split, epochs=5, seed=seed)
    enc, key = ap.encrypt(model, ap.Params(), seed=seed, data=(split.x_held, split.y_held))
    weights = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    return model, weights, key


@pytest.fixture(scope="module")
def split():
    return toy.digits()


@pytest.fixture(scope="module")
def owned(split):
    return _model_and_encrypted(split, 0)


@pytest.fixture(scope="module")
def doc(owned):
    _, weights, key = owned
    return issue_licence("Acme Ltd", weights, key, REGISTRY, OWNER, model_name="digits-mlp",
                         issued_at=WHEN)


def _payload(doc):
    return json.loads(base64.b64decode(doc["payload"]))


def _resigned(doc, change, payload_type=LICENCE_PAYLOAD_TYPE, raw=None):
    payload = _payload(doc)
    change(payload)
    return sign_envelope(raw if raw is not None else canonical_json(payload), payload_type,
                         [REGISTRY, OWNER])


def test_it_verifies_offline_with_the_registry_and_owner_keys(owned, doc):
    _, weights, key = owned
    lic = verify_licence(doc, REGISTRY.public_key, OWNER.public_key)
    assert isinstance(lic, Licence)
    assert (lic.licensee, lic.model_name, lic.issued_at) == ("Acme Ltd", "digits-mlp", WHEN)
    assert lic.model_digest == weights_digest(weights)
    assert lic.key.to_bytes() == key.to_bytes()
    assert (lic.registry_keyid, lic.owner_keyid) == (REGISTRY.keyid, OWNER.keyid)
    assert doc["payloadType"] == LICENCE_PAYLOAD_TYPE
    assert [s["keyid"] for s in doc["signatures"]] == [REGISTRY.keyid, OWNER.keyid]


def test_the_payload_is_canonical_json_and_issuing_is_deterministic(owned, doc):
    _, weights, key = owned
    raw = base64.b64decode(doc["payload"])
    assert raw == canonical_json(json.loads(raw))
    assert issue_licence("Acme Ltd", weights, key, REGISTRY, OWNER, model_name="digits-mlp",
                         issued_at=WHEN) == doc
    assert _payload(doc)["scheme"] == "advparams"


def test_it_decrypts_the_named_model_bit_exact(owned, doc):
    model, weights, _ = owned
    plain = decrypt_with_licence(weights, verify_licence(doc, REGISTRY.public_key,
                                                         OWNER.public_key))
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items())


def test_it_refuses_any_other_model(split, owned, doc):
    model, weights, _ = owned
    lic = verify_licence(doc, REGISTRY.public_key, OWNER.public_key)
    _, other, _ = _model_and_encrypted(split, 1)
    with pytest.raises(LicenceError, match="covers the model with digest"):
        decrypt_with_licence(other, lic)
    with pytest.raises(LicenceError, match="covers the model"):
        decrypt_with_licence(dict(model.state_dict()), lic)  # already plain: not the named one
    tweaked = {k: v.clone() for k, v in weights.items()}
    tweaked["fc1.bias"][0] += 1e-6
    with pytest.raises(LicenceError, match="covers the model"):
        decrypt_with_licence(tweaked, lic)
    with pytest.raises(LicenceError, match="verify_licence"):
        decrypt_with_licence(weights, _payload(doc))


def test_it_rejects_a_licence_with_one_changed_payload_byte(doc):
    raw = bytearray(base64.b64decode(doc["payload"]))
    raw[raw.index(b"Acme")] = ord("X")
    forged = dict(doc, payload=base64.b64encode(bytes(raw)).decode())
    with pytest.raises(EvidenceError, match="bad signature"):
        verify_licence(forged, REGISTRY.public_key, OWNER.public_key)


def test_it_rejects_a_removed_owner_signature_or_a_foreign_one(doc):
    only_registry = dict(doc, signatures=doc["signatures"][:1])
    with pytest.raises(EvidenceError, match="signature removed"):
        verify_licence(only_registry, REGISTRY.public_key, OWNER.public_key)
    with pytest.raises(EvidenceError, match="unknown key"):
        verify_licence(doc, REGISTRY.public_key, OUTSIDER.public_key)
    with pytest.raises(EvidenceError, match="unknown key"):
        verify_licence(doc, OUTSIDER.public_key, OWNER.public_key)
    with pytest.raises(LicenceError, match="same key"):
        verify_licence(doc, OWNER.public_key, OWNER.public_key)


def test_it_rejects_a_validly_signed_document_that_is_not_a_licence(doc):
    other_type = _resigned(doc, lambda p: None, payload_type="application/vnd.in-toto+json")
    with pytest.raises(LicenceError, match="payloadType"):
        verify_licence(other_type, REGISTRY.public_key, OWNER.public_key)
    with pytest.raises(LicenceError, match="_type"):
        verify_licence(_resigned(doc, lambda p: p.update(_type="x")), REGISTRY.public_key,
                       OWNER.public_key)
    loose = json.dumps(_payload(doc), indent=1).encode()
    with pytest.raises(LicenceError, match="canonical"):
        verify_licence(_resigned(doc, lambda p: None, raw=loose), REGISTRY.public_key,
                       OWNER.public_key)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(key_sha256="0" * 64), "key_sha256"),
    (lambda p: p.update(scheme="lsb"), "only 'advparams'"),
    (lambda p: p.update(licensee=" "), "licensee must be non-empty"),
    (lambda p: p.update(issued_at="yesterday"), "issued_at"),
    (lambda p: p["model"]["digest"].update(sha256="ABC"), "64 lower-case hex"),
    (lambda p: p["owner"].update(ed25519=base64.b64encode(OUTSIDER.public_key).decode()),
     "another owner key"),
    (lambda p: p.pop("licensee"), "no `licensee` field"),
    (lambda p: p.update(licensee=5), "must be a str"),
    (lambda p: p.update(key=base64.b64encode(b"nope").decode(),
                        key_sha256=__import__("hashlib").sha256(b"nope").hexdigest()),
     "not an advparams key"),
])
def test_it_rejects_malformed_fields_even_when_validly_signed(doc, change, message):
    with pytest.raises(LicenceError, match=message):
        verify_licence(_resigned(doc, change), REGISTRY.public_key, OWNER.public_key)


def test_it_names_its_signers_without_vouching_for_them(doc):
    assert licence_signers(doc) == (REGISTRY.public_key, OWNER.public_key)
    with pytest.raises(EvidenceError, match="malformed envelope"):
        licence_signers({"payload": "x"})


def test_it_refuses_to_issue_a_licence_that_could_not_work(split, owned):
    model, weights, key = owned
    with pytest.raises(LicenceError, match="licensee"):
        issue_licence("", weights, key, REGISTRY, OWNER)
    with pytest.raises(LicenceError, match="issued_at"):
        issue_licence("Acme", weights, key, REGISTRY, OWNER, issued_at="2026-01-31")
    with pytest.raises(LicenceError, match="two different identities"):
        issue_licence("Acme", weights, key, OWNER, OWNER)
    with pytest.raises(LicenceError, match="does not decrypt"):
        issue_licence("Acme", dict(model.state_dict()), key, REGISTRY, OWNER)


def test_an_issued_licence_defaults_to_the_current_utc_time(owned):
    _, weights, key = owned
    lic = verify_licence(issue_licence("Acme", weights, key, REGISTRY, OWNER),
                         REGISTRY.public_key, OWNER.public_key)
    assert lic.issued_at.endswith("Z") and lic.issued_at >= "2025"


def test_the_weights_digest_ignores_order_but_not_content():
    w = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    reordered = {"b": w["b"], "a": w["a"].t().contiguous().t()}  # other order, other strides
    assert weights_digest(w) == weights_digest(reordered)
    for change in (lambda d: d.update(a=d["a"].view(3, 2)),
                   lambda d: d.update(a=d["a"].double()),
                   lambda d: d.update(c=d.pop("a")),
                   lambda d: d["a"].view(-1).__setitem__(0, -0.0)):
        other = copy.deepcopy(w)
        change(other)
        assert weights_digest(other) != weights_digest(w)
