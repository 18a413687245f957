"""The byte encoding of every kind of entry in Hallmark's transparency log.

An entry is `canonical_json` of an object whose "type" names its kind. Signed artifacts are
logged by digest: "envelope_sha256" is the hex SHA-256 of `canonical_json(envelope)` of the
DSSE envelope as stored and served, so changing any byte of the envelope (payload, a
signature, a keyid) changes the entry and breaks its inclusion proof. The other fields are
in clear so that monitors can follow the log without fetching every envelope.

Kinds and their required fields (extra fields are allowed and are logged as given):

| type         | required fields                                               |
|--------------|---------------------------------------------------------------|
| "owner"      | keyid, public_key (base64), envelope_sha256                    |
| "model"      | model, owner_keyid, envelope_sha256                            |
| "commitment" | commitment (hex), scheme, model, owner_keyid, envelope_sha256  |
| "licence"    | licence, model, envelope_sha256                                |
| "report"     | envelope_sha256                                                |
| "correction" | corrects (log index of the corrected entry), envelope_sha256   |
| "countersignature" | keyid, sig (base64), signed_at, envelope_sha256 (the report's) |

An "owner" entry logs the owner statement envelope of `verifier.evidence.owners` (signed by
the registry, and by the owner's key when the registry holds it).

A "commitment" entry also carries the key's public parameters and its "screening" against the
registry's reference panel (`verifier.screening.Screening.to_dict()` plus "domain", or
{"status": "not needed"} for a key whose every random element derives from its seed).

A correction never edits an entry: it is a new entry that points at the one it corrects.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verifier.evidence.canonical import canonical_json, loads_strict, sha256_hex
from verifier.evidence.errors import EvidenceError

REQUIRED: dict[str, tuple[str, ...]] = {
    "owner": ("keyid", "public_key", "envelope_sha256"),
    "model": ("model", "owner_keyid", "envelope_sha256"),
    "commitment": ("commitment", "scheme", "model", "owner_keyid", "envelope_sha256"),
    "licence": ("licence", "model", "envelope_sha256"),
    "report": ("envelope_sha256",),
    "correction": ("corrects", "envelope_sha256"),
    "countersignature": ("keyid", "sig", "signed_at", "envelope_sha256"),
}


def envelope_sha256(envelope: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of a DSSE envelope (how the log names it)."""
    return sha256_hex(canonical_json(dict(envelope)))


def log_entry(kind: str, envelope: Mapping[str, Any] | None = None, **fields: Any) -> bytes:
    """The entry bytes to append to the log.

    Args:
        kind: one of REQUIRED's keys.
        envelope: the signed DSSE envelope this entry logs (sets "envelope_sha256").
        **fields: the kind's other required fields (and any extra ones).

    Returns:
        canonical_json({"type": kind, **fields, "envelope_sha256": …}).

    Raises:
        EvidenceError: unknown kind or a missing required field.

    Example:
        >>> log_entry("report", envelope_sha256="ab" * 32)[:40]
        b'{"envelope_sha256":"abababababababababab'
    """
    if kind not in REQUIRED:
        raise EvidenceError(f"unknown log entry type {kind!r}; expected one of {', '.join(REQUIRED)}")
    obj: dict[str, Any] = {"type": kind, **fields}
    if envelope is not None:
        obj["envelope_sha256"] = envelope_sha256(envelope)
    missing = [f for f in REQUIRED[kind] if f not in obj]
    if missing:
        raise EvidenceError(f"a {kind!r} log entry needs the field(s) {', '.join(missing)}")
    return canonical_json(obj)


def report_entry(envelope: Mapping[str, Any]) -> bytes:
    """The log entry of a report: {"type":"report","envelope_sha256": …} in canonical JSON."""
    return log_entry("report", envelope)


def parse_entry(entry: bytes) -> dict[str, Any]:
    """Parse a log entry, checking it is canonical JSON of a known kind with its fields.

    Raises:
        EvidenceError: "malformed log entry: …".
    """
    try:
        obj = loads_strict(entry, "log entry")
    except EvidenceError as e:
        raise EvidenceError(f"malformed log entry: {e}") from None
    if not isinstance(obj, dict) or obj.get("type") not in REQUIRED:
        raise EvidenceError("malformed log entry: not an object with a known \"type\"")
    if canonical_json(obj) != entry:
        raise EvidenceError("malformed log entry: not in canonical JSON form")
    missing = [f for f in REQUIRED[obj["type"]] if f not in obj]
    if missing:
        raise EvidenceError(f"malformed log entry: a {obj['type']!r} entry lacks {', '.join(missing)}")
    return obj
