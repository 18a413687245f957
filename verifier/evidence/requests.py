"""What an owner signs when registering: DSSE envelopes over canonical JSON requests.

A bring-your-own-key owner signs client-side (`hallmark request`); for an owner whose key the
registry holds in escrow, the registry signs on the owner's behalf. Either way the log entry of
the registration names the SHA-256 of that owner-signed envelope, so a registration is
provably the owner's and not the registry's.

Requests (canonical JSON; payload type REQUEST_TYPE):
- {"type": "hallmark/model-request/v1", "name", "version", "artifact_sha256",
   "base_model_sha256"} — registering a model (the model id is assigned later);
- {"type": "hallmark/commitment-request/v1", "model": <model uuid>, "scheme",
   "key_sha256": <hex SHA-256 of the key blob>} — committing to a key (the salt, and so the
   commitment digest, are chosen by the registry, so the owner signs the key's digest).
"""
from __future__ import annotations

from typing import Any

from verifier.evidence.canonical import canonical_json
from verifier.evidence.dsse import pae
from verifier.evidence.identity import Identity, b64, keyid_of

REQUEST_TYPE = "application/vnd.hallmark.request+json"


def model_request(name: str, version: str, artifact_sha256: str = "",
                  base_model_sha256: str = "") -> bytes:
    return canonical_json({"type": "hallmark/model-request/v1", "name": name, "version": version,
                           "artifact_sha256": artifact_sha256,
                           "base_model_sha256": base_model_sha256})


def commitment_request(model_id: str, scheme: str, key_sha256: str) -> bytes:
    return canonical_json({"type": "hallmark/commitment-request/v1", "model": model_id,
                           "scheme": scheme, "key_sha256": key_sha256})


def sign_request(identity: Identity, request: bytes) -> bytes:
    """The owner's Ed25519 signature over the DSSE PAE of `request` (64 bytes)."""
    return identity.sign(pae(REQUEST_TYPE, request))


def request_envelope(request: bytes, public_key: bytes, signature: bytes) -> dict[str, Any]:
    """The DSSE envelope of a signed request (verify it with dsse.verify_envelope)."""
    return {"payload": b64(request), "payloadType": REQUEST_TYPE,
            "signatures": [{"keyid": keyid_of(public_key), "sig": b64(signature)}]}
