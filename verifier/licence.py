"""Licences: the decryption key of an AdvParams-encrypted model, issued to a named licensee.

An owner publishes the encrypted model (useless as it stands: accuracy collapses) and the
registry issues the AdvParams key to one licensee at a time as a licence: a DSSE envelope
(payloadType "application/vnd.hallmark.licence+json") over the canonical JSON document

    {"_type": "hallmark/licence/v1",
     "licensee": "<who may decrypt>",
     "model": {"name": "<model name>", "digest": {"sha256": "<weights_digest of the ENCRYPTED model>"}},
     "scheme": "advparams",
     "key": "<base64 of the advparams key blob: the decryption material>",
     "key_sha256": "<hex SHA-256 of that blob>",
     "issued_at": "<UTC, RFC 3339, seconds: 2026-01-31T12:00:00Z>",
     "registry": {"keyid": "<hex>", "ed25519": "<base64>"},
     "owner": {"keyid": "<hex>", "ed25519": "<base64>"}}

signed by both the registry and the owner. Checking a licence needs no server: the two
signatures, the payload type, every field, and that the key really decrypts the named model.

What a licence is not: it is signed, not encrypted. Whoever holds the licence file can decrypt
the named model, so deliver it over a confidential channel; the licensee's name in it makes a
leaked licence attributable, not unusable.

Example:
    >>> import torch
    >>> from verifier import toy
    >>> from verifier.evidence.identity import Identity
    >>> from verifier.schemes import advparams
    >>> s = toy.digits(); m = toy.train_digits(toy.MLP(), s, 10)
    >>> enc, key = advparams.encrypt(m, advparams.Params(), 0, (s.x_held, s.y_held))
    >>> registry, owner = Identity.from_seed(bytes(32)), Identity.from_seed(bytes(31) + b"\\1")
    >>> w = {k: v.detach() for k, v in enc.state_dict().items()}
    >>> doc = issue_licence("Acme Ltd", w, key, registry, owner, model_name="digits-mlp")
    >>> lic = verify_licence(doc, registry.public_key, owner.public_key)
    >>> plain = decrypt_with_licence(w, lic)
    >>> all(torch.equal(plain[k], v) for k, v in m.state_dict().items())
    True
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from verifier import keyfile
from verifier.evidence.canonical import canonical_json, loads_strict, sha256_hex
from verifier.evidence.dsse import parse_envelope, sign_envelope, verify_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, b64, keyid_of, unb64_strict
from verifier.schemes import advparams

LICENCE_PAYLOAD_TYPE = "application/vnd.hallmark.licence+json"
LICENCE_TYPE = "hallmark/licence/v1"
WEIGHTS_DIGEST_FORMAT = "hallmark/weights/v1"
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class LicenceError(EvidenceError):
    """A licence that does not check out, or a model it does not cover."""


@dataclass(frozen=True)
class Licence:
    """A verified licence (only `verify_licence` makes one)."""

    licensee: str  # who may decrypt
    model_name: str  # the owner's name for the model (informational)
    model_digest: str  # weights_digest of the encrypted model the licence covers
    key: advparams.Key  # the decryption material
    issued_at: str  # UTC, RFC 3339 to the second
    registry_keyid: str  # hex SHA-256 of the registry's public key
    owner_keyid: str  # hex SHA-256 of the owner's public key


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 that names a model's weights, independent of the file they came in.

    Rules: SHA-256 of canonical_json({"format": "hallmark/weights/v1", "tensors": {name:
    {"dtype": <torch dtype name, e.g. "float32">, "shape": [...], "sha256": <hex SHA-256 of the
    tensor's little-endian, row-major bytes>}}}). File metadata, tensor order and storage
    layout do not change it; any changed bit, dtype, shape or name does.

    Example:
        >>> weights_digest({"w": torch.zeros(2)}) == weights_digest({"w": torch.zeros(2)})
        True
    """
    tensors = {}
    for name in weights:
        t = weights[name].detach().cpu().contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        tensors[str(name)] = {"dtype": str(t.dtype).removeprefix("torch."),
                              "shape": list(t.shape), "sha256": hashlib.sha256(raw).hexdigest()}
    return sha256_hex(canonical_json({"format": WEIGHTS_DIGEST_FORMAT, "tensors": tensors}))


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def issue_licence(licensee: str, encrypted_weights: Mapping[str, torch.Tensor],
                  key: advparams.Key, registry: Identity, owner: Identity, *,
                  model_name: str = "", issued_at: str | None = None) -> dict[str, Any]:
    """Issue a licence to decrypt one encrypted model, signed by the registry and the owner.

    Args:
        licensee: the licensee's name or account id (non-empty).
        encrypted_weights: the published encrypted model's named weights.
        key: the AdvParams key that decrypts it.
        registry: the registry's identity (signs first).
        owner: the model owner's identity.
        model_name: the owner's name for the model, informational.
        issued_at: UTC "YYYY-MM-DDTHH:MM:SSZ"; now if None.

    Returns:
        The licence: a DSSE envelope (JSON-ready dict).

    Raises:
        LicenceError: an empty licensee, a bad time, the same identity twice, or a key that
            does not decrypt these weights (a licence that could never be used).
    """
    if not isinstance(licensee, str) or not licensee.strip():
        raise LicenceError("licensee must be a non-empty name, e.g. the licensee's account id")
    issued_at = _now() if issued_at is None else issued_at
    if not isinstance(issued_at, str) or not _TIME.fullmatch(issued_at):
        raise LicenceError(f"issued_at must be UTC like 2026-01-31T12:00:00Z, received "
                           f"{issued_at!r}")
    if registry.keyid == owner.keyid:
        raise LicenceError("the registry and the owner must be two different identities")
    try:
        advparams.decrypt(dict(encrypted_weights), key)
    except advparams.AdvParamsError as e:
        raise LicenceError(f"refusing to issue a licence whose key does not decrypt the given "
                           f"model: {e}") from None
    blob = key.to_bytes()
    payload = {
        "_type": LICENCE_TYPE, "licensee": licensee, "scheme": advparams.NAME,
        "model": {"name": model_name, "digest": {"sha256": weights_digest(encrypted_weights)}},
        "key": b64(blob), "key_sha256": hashlib.sha256(blob).hexdigest(), "issued_at": issued_at,
        "registry": {"keyid": registry.keyid, "ed25519": b64(registry.public_key)},
        "owner": {"keyid": owner.keyid, "ed25519": b64(owner.public_key)},
    }
    return sign_envelope(canonical_json(payload), LICENCE_PAYLOAD_TYPE, [registry, owner])


def _field(doc: Mapping[str, Any], path: str, kind: type) -> Any:
    """doc[a][b]... for path "a.b", required to be of `kind`."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise LicenceError(f"licence payload has no `{path}` field")
        value = value[part]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise LicenceError(f"licence field `{path}` must be a {kind.__name__}, received "
                           f"{type(value).__name__}")
    return value


def licence_signers(doc: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The (registry, owner) public keys a licence names, read WITHOUT verifying anything.

    Use it to find the owner's key (which the registry's signature vouches for) or to display
    who issued a licence; trust comes only from `verify_licence` with a known registry key.

    Raises:
        EvidenceError: not a licence envelope.
    """
    payload = loads_strict(parse_envelope(doc).payload, "licence payload")
    if not isinstance(payload, Mapping):
        raise LicenceError("licence payload must be a JSON object")
    return (unb64_strict(_field(payload, "registry.ed25519", str), "registry key", 32),
            unb64_strict(_field(payload, "owner.ed25519", str), "owner key", 32))


def verify_licence(doc: Mapping[str, Any], registry_key: bytes, owner_key: bytes) -> Licence:
    """Check a licence offline: both signatures, its type, every field, and its key.

    Args:
        doc: the licence envelope as parsed JSON.
        registry_key: the registry's trusted 32-byte Ed25519 public key.
        owner_key: the owner's 32-byte Ed25519 public key.

    Returns:
        The verified Licence.

    Raises:
        EvidenceError (LicenceError for licence-specific faults): a changed byte, a missing or
            foreign signature, another payload type, a malformed field, keys in the payload that
            are not the signers', or a key blob that does not match its hash.
    """
    trusted = {keyid_of(registry_key): registry_key, keyid_of(owner_key): owner_key}
    if len(trusted) != 2:
        raise LicenceError("registry_key and owner_key are the same key; a licence needs both")
    payload_bytes = verify_envelope(doc, trusted, set(trusted))
    if doc.get("payloadType") != LICENCE_PAYLOAD_TYPE:
        raise LicenceError(f"not a licence: payloadType is {doc.get('payloadType')!r}, expected "
                           f"{LICENCE_PAYLOAD_TYPE!r}")
    payload = loads_strict(payload_bytes, "licence payload")
    if not isinstance(payload, Mapping) or payload.get("_type") != LICENCE_TYPE:
        got = payload.get("_type") if isinstance(payload, Mapping) else type(payload).__name__
        raise LicenceError(f"not a licence: _type is {got!r}, expected {LICENCE_TYPE!r}")
    if canonical_json(payload) != payload_bytes:
        raise LicenceError("licence payload is not in canonical JSON form")
    for role, key in (("registry", registry_key), ("owner", owner_key)):
        named = unb64_strict(_field(payload, f"{role}.ed25519", str), f"{role} key", 32)
        if named != key or _field(payload, f"{role}.keyid", str) != keyid_of(key):
            raise LicenceError(f"the licence names another {role} key than the one that signed "
                               "it")
    if _field(payload, "scheme", str) != advparams.NAME:
        raise LicenceError(f"licence scheme is {payload['scheme']!r}; only "
                           f"{advparams.NAME!r} keys can be licensed")
    licensee = _field(payload, "licensee", str)
    digest = _field(payload, "model.digest.sha256", str)
    issued_at = _field(payload, "issued_at", str)
    if not licensee.strip() or not _HEX64.fullmatch(digest) or not _TIME.fullmatch(issued_at):
        raise LicenceError("licence fields malformed: licensee must be non-empty, the model "
                           "digest 64 lower-case hex digits and issued_at UTC like "
                           "2026-01-31T12:00:00Z")
    blob = unb64_strict(_field(payload, "key", str), "licence key")
    if hashlib.sha256(blob).hexdigest() != _field(payload, "key_sha256", str):
        raise LicenceError("the licence's key does not match its key_sha256")
    try:
        decryption_key = advparams.Key.from_bytes(blob)
    except keyfile.KeyFormatError as e:
        raise LicenceError(f"the licence's key is not an advparams key: {e}") from None
    return Licence(licensee=licensee, model_name=_field(payload, "model.name", str),
                   model_digest=digest, key=decryption_key, issued_at=issued_at,
                   registry_keyid=keyid_of(registry_key), owner_keyid=keyid_of(owner_key))


def decrypt_with_licence(weights: Mapping[str, torch.Tensor], licence: Licence
                         ) -> dict[str, torch.Tensor]:
    """Decrypt the model a verified licence names; refuse any other model.

    Args:
        weights: the encrypted model's named weights (e.g. from a safetensors file).
        licence: from `verify_licence`.

    Returns:
        The decrypted weights: the original model, bit-exact.

    Raises:
        LicenceError: the weights' digest is not the licensed one, or the key does not apply.
    """
    if not isinstance(licence, Licence):
        raise LicenceError(f"expected a Licence from verify_licence, received "
                           f"{type(licence).__name__}")
    digest = weights_digest(weights)
    if digest != licence.model_digest:
        raise LicenceError(f"this licence covers the model with digest {licence.model_digest[:16]}"
                           f"…, not this one ({digest[:16]}…); use the encrypted model the "
                           "licence names, unmodified")
    try:
        return advparams.decrypt(dict(weights), licence.key)
    except advparams.AdvParamsError as e:
        raise LicenceError(f"the licensed key does not decrypt the licensed model: {e}") from None
