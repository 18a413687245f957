"""Owner statements (logged at sign-up) and owners' countersignatures of reports.

Owner statement: a DSSE envelope, payloadType OWNER_PAYLOAD_TYPE, whose payload is canonical
JSON of {"type": "hallmark/owner/v1", "keyid", "public_key" (base64), "byok", "registered_at"
(RFC 3339 UTC)}. The registry signs it; when the registry holds the owner's key it is also
signed by that key (proof of possession). Its log entry is
`log_entry("owner", envelope, keyid=..., public_key=...)`.

Countersignature: a bring-your-own-key owner's Ed25519 signature over the report envelope's
DSSE PAE, i.e. exactly what a signature inside the envelope would be (so it verifies the same
way), made on the owner's machine by `hallmark countersign` and logged as
{"type": "countersignature", "envelope_sha256": <the report envelope's>, "keyid", "sig",
"signed_at"}.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verifier.evidence.canonical import canonical_json
from verifier.evidence.dsse import pae, parse_envelope, sign_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, b64, keyid_of, unb64_strict, verify_signature
from verifier.evidence.logentry import log_entry

OWNER_PAYLOAD_TYPE = "application/vnd.hallmark.owner+json"
OWNER_STATEMENT = "hallmark/owner/v1"


def owner_statement(registry: Identity, public_key: bytes, registered_at: str,
                    owner: Identity | None = None) -> dict[str, Any]:
    """The owner statement envelope, signed by the registry (and by `owner`, when held)."""
    if owner is not None and owner.public_key != public_key:
        raise EvidenceError("the owner identity does not hold the stated public key")
    payload = canonical_json({"type": OWNER_STATEMENT, "keyid": keyid_of(public_key),
                              "public_key": b64(public_key), "byok": owner is None,
                              "registered_at": registered_at})
    return sign_envelope(payload, OWNER_PAYLOAD_TYPE, [registry, *([owner] if owner else [])])


def owner_entry(envelope: Mapping[str, Any], public_key: bytes) -> bytes:
    """The "owner" log entry of an owner statement."""
    return log_entry("owner", envelope, keyid=keyid_of(public_key), public_key=b64(public_key))


def countersign(envelope: Mapping[str, Any], identity: Identity) -> str:
    """The base64 signature of `identity` over the envelope's DSSE PAE."""
    env = parse_envelope(dict(envelope))
    return b64(identity.sign(pae(env.payload_type, env.payload)))


def verify_countersignature(envelope: Mapping[str, Any], public_key: bytes, sig: str) -> None:
    """Check a countersignature over the envelope's DSSE PAE.

    Raises:
        EvidenceError: malformed, or not a signature of this envelope by this key.
    """
    env = parse_envelope(dict(envelope))
    raw = unb64_strict(sig, "countersignature", 64)
    if not verify_signature(public_key, pae(env.payload_type, env.payload), raw):
        raise EvidenceError(f"countersignature by {keyid_of(public_key)[:16]}… does not verify "
                            "over this report's DSSE PAE (another report, key or changed bytes)")


def countersignature_entry(envelope: Mapping[str, Any], keyid: str, sig: str,
                           signed_at: str) -> bytes:
    """The "countersignature" log entry."""
    return log_entry("countersignature", envelope, keyid=keyid, sig=sig, signed_at=signed_at)
