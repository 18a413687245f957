"""DSSE v1 envelopes (secure-systems-lab/dsse, protocol v1.0.2), signed with Ed25519.

Rules (from the DSSE protocol):
- the signature covers PAE(payloadType, payload) =
  "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN being the ASCII decimal byte length;
- the JSON envelope is {"payload": base64, "payloadType": str, "signatures": [{"keyid", "sig"}]};
- verifiers accept standard and URL-safe base64, ignore unknown fields, treat `keyid` as a hint
  (here it must name a trusted key whose id really is that keyid) and hand the application
  exactly the bytes that were verified, never a re-encoding.

Hallmark's policy on top: every signature must be by a trusted key ("unknown key" otherwise),
must verify ("bad signature"), each key signs at most once, and every required key must have
signed ("signature removed").
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, b64, keyid_of, unb64, verify_signature

PAYLOAD_TYPE_INTOTO = "application/vnd.in-toto+json"  # in-toto Statement payloads


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: the exact bytes a signature covers.

    Args:
        payload_type: the payload's media type (its UTF-8 bytes are encoded).
        payload: the payload bytes.

    Returns:
        b"DSSEv1 <len(type)> <type> <len(payload)> <payload>".

    Example:
        >>> pae("http://example.com/HelloWorld", b"hello world")
        b'DSSEv1 29 http://example.com/HelloWorld 11 hello world'
    """
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign_envelope(payload: bytes, payload_type: str, identities: Iterable[Identity]) -> dict[str, Any]:
    """Sign `payload` with every identity and wrap it in a DSSE envelope.

    Args:
        payload: the exact bytes to sign (for a report: canonical JSON of an in-toto Statement).
        payload_type: e.g. PAYLOAD_TYPE_INTOTO.
        identities: one or more signers, each signing once, in the order given.

    Returns:
        {"payload": b64, "payloadType": payload_type, "signatures": [{"keyid", "sig"}, ...]}.

    Example:
        >>> env = sign_envelope(b"{}", PAYLOAD_TYPE_INTOTO, [Identity.from_seed(bytes(32))])
        >>> sorted(env), len(env["signatures"])
        (['payload', 'payloadType', 'signatures'], 1)
    """
    ids = list(identities)
    if not ids:
        raise EvidenceError("sign_envelope needs at least one identity to sign with")
    if len({i.keyid for i in ids}) != len(ids):
        raise EvidenceError("sign_envelope received the same identity twice; each key signs once")
    if not isinstance(payload_type, str) or not payload_type:
        raise EvidenceError("payloadType must be a non-empty string such as "
                            f"{PAYLOAD_TYPE_INTOTO!r}")
    message = pae(payload_type, payload)
    return {"payload": b64(payload), "payloadType": payload_type,
            "signatures": [{"keyid": i.keyid, "sig": b64(i.sign(message))} for i in ids]}


@dataclass(frozen=True)
class ParsedEnvelope:
    """An envelope's fields, decoded but not yet verified."""

    payload: bytes  # the decoded payload bytes
    payload_type: str  # payloadType
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, 64-byte signature), in envelope order


def parse_envelope(envelope: Any) -> ParsedEnvelope:
    """Check an envelope's structure and decode it, without verifying any signature.

    Raises:
        EvidenceError: "malformed envelope: …" naming the field at fault.
    """
    def bad(why: str) -> EvidenceError:
        return EvidenceError(f"malformed envelope: {why}")

    if not isinstance(envelope, Mapping):
        raise bad(f"expected a JSON object, received {type(envelope).__name__}")
    for field in ("payload", "payloadType", "signatures"):
        if field not in envelope:
            raise bad(f"the {field!r} field is missing")
    if not isinstance(envelope["payloadType"], str) or not envelope["payloadType"]:
        raise bad("payloadType must be a non-empty string")
    if not isinstance(envelope["payload"], str):
        raise bad("payload must be a base64 string")
    try:
        payload = unb64(envelope["payload"])
    except EvidenceError as e:
        raise bad(f"payload: {e}") from None
    sigs = envelope["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise bad("signatures must be a non-empty list")
    out, seen = [], set()
    for n, s in enumerate(sigs):
        if not isinstance(s, Mapping):
            raise bad(f"signatures[{n}] must be an object with keyid and sig")
        keyid, sig = s.get("keyid"), s.get("sig")
        if not isinstance(keyid, str) or not keyid:
            raise bad(f"signatures[{n}] has no keyid; Hallmark signatures always name their key")
        if not isinstance(sig, str):
            raise bad(f"signatures[{n}].sig must be a base64 string")
        try:
            raw = unb64(sig)
        except EvidenceError as e:
            raise bad(f"signatures[{n}].sig: {e}") from None
        if keyid in seen:
            raise bad(f"key {keyid[:16]}… signs twice; each key signs an envelope once")
        seen.add(keyid)
        out.append((keyid, raw))
    return ParsedEnvelope(payload, envelope["payloadType"], tuple(out))


def verify_envelope(envelope: Any, trusted: Mapping[str, bytes],
                    required: Iterable[str] = ()) -> bytes:
    """Verify every signature of a DSSE envelope and return exactly the verified payload.

    Args:
        envelope: the envelope as parsed JSON.
        trusted: keyid -> raw 32-byte Ed25519 public key, for every key allowed to sign.
        required: keyids that must have signed (a subset of `trusted`).

    Returns:
        The payload bytes the signatures cover (decode/parse these, never re-encode).

    Raises:
        EvidenceError: "malformed envelope: …", "unknown key …", "bad signature …" or
            "signature removed: …", each naming the key.

    Example:
        >>> me = Identity.from_seed(bytes(32))
        >>> env = sign_envelope(b"hi", "text/plain", [me])
        >>> verify_envelope(env, {me.keyid: me.public_key}, {me.keyid})
        b'hi'
    """
    for keyid, key in trusted.items():
        if keyid_of(key) != keyid:
            raise EvidenceError(f"trusted key listed under keyid {keyid[:16]}… has id "
                                f"{keyid_of(key)[:16]}…; list keys under keyid_of(public_key)")
    missing_trust = set(required) - set(trusted)
    if missing_trust:
        raise EvidenceError(f"required signer {sorted(missing_trust)[0][:16]}… is not among the "
                            "trusted keys; pass its public key in `trusted`")
    env = parse_envelope(envelope)
    message = pae(env.payload_type, env.payload)
    for keyid, sig in env.signatures:
        if keyid not in trusted:
            raise EvidenceError(f"unknown key {keyid[:16]}…: the envelope carries a signature by "
                                "a key that is neither the registry's nor a listed owner's")
        if not verify_signature(trusted[keyid], message, sig):
            raise EvidenceError(f"bad signature by key {keyid[:16]}…: it does not verify over "
                                "the DSSE PAE of this payload (payload or signature changed)")
    signed = {k for k, _ in env.signatures}
    for keyid in sorted(set(required) - signed):
        raise EvidenceError(f"signature removed: required signer {keyid[:16]}… did not sign "
                            "the envelope")
    return env.payload
