"""Hiding and binding commitments to watermark key blobs, and their openings.

The commitment layout (version 1), every field length-prefixed so no two inputs share an
encoding:

    commitment = SHA-256( u64be(22) ‖ "hallmark/commitment/v1"
                        ‖ u64be(len(scheme)) ‖ scheme (UTF-8)
                        ‖ u64be(32) ‖ salt (32 bytes)
                        ‖ u64be(32) ‖ SHA-256(key blob) )

u64be(n) is n as an 8-byte big-endian unsigned integer. The salt (32 random bytes, never
reused) makes the commitment hiding: it reveals nothing about the key, even a guessable one.
SHA-256 makes it binding: no second key, salt or scheme opens the same commitment. The
domain prefix keeps these hashes apart from every other SHA-256 in Hallmark.

An opening is the JSON object {"scheme", "salt": base64, "key": base64 of the key blob,
"commitment": hex}: the owner publishes it (`hallmark open`) to let anyone check the
commitment and recompute a report's statistics.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

from verifier.evidence.canonical import loads_strict
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64, unb64

DOMAIN = b"hallmark/commitment/v1"
SALT_BYTES = 32
_SCHEME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def new_salt() -> bytes:
    """32 bytes from the operating system's random source (one per commitment)."""
    return os.urandom(SALT_BYTES)


def _field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def _check_inputs(scheme: str, salt: bytes, key_blob: bytes) -> None:
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        raise EvidenceError(f"scheme must be a registered scheme name such as 'uchida' "
                            f"(lower case, digits, underscores), received {scheme!r}")
    if not isinstance(salt, (bytes, bytearray)) or len(salt) != SALT_BYTES:
        got = len(salt) if isinstance(salt, (bytes, bytearray)) else type(salt).__name__
        raise EvidenceError(f"salt must be {SALT_BYTES} random bytes (new_salt()), received {got}")
    if not isinstance(key_blob, (bytes, bytearray)) or not key_blob:
        raise EvidenceError("key blob must be non-empty bytes (the scheme's Key.to_bytes())")


def commit(scheme: str, salt: bytes, key_blob: bytes) -> str:
    """The commitment to `key_blob` under `scheme` and `salt`, as 64 hex characters.

    Example:
        >>> c = commit("uchida", bytes(32), b"key")
        >>> len(c), c == commit("uchida", bytes(32), b"key"), c == commit("lsb", bytes(32), b"key")
        (64, True, False)
    """
    _check_inputs(scheme, salt, key_blob)
    message = (_field(DOMAIN) + _field(scheme.encode("utf-8")) + _field(bytes(salt))
               + _field(hashlib.sha256(key_blob).digest()))
    return hashlib.sha256(message).hexdigest()


def verify_opening(commitment_hex: str, scheme: str, salt: bytes, key_blob: bytes) -> bool:
    """True when (scheme, salt, key_blob) opens `commitment_hex`; never raises on bad input."""
    try:
        return hmac.compare_digest(commit(scheme, salt, key_blob), str(commitment_hex))
    except EvidenceError:
        return False


@dataclass(frozen=True)
class Opening:
    """A revealed commitment: the scheme, salt and key blob, and the commitment they open."""

    scheme: str  # registered scheme name
    salt: bytes  # 32 bytes
    key_blob: bytes  # the scheme's key as a safetensors blob
    commitment: str  # 64 hex characters


def make_opening(scheme: str, salt: bytes, key_blob: bytes) -> dict[str, str]:
    """The opening JSON object for a key blob (what `hallmark open` writes).

    Example:
        >>> o = make_opening("uchida", bytes(32), b"key")
        >>> sorted(o), o["commitment"] == commit("uchida", bytes(32), b"key")
        (['commitment', 'key', 'salt', 'scheme'], True)
    """
    return {"scheme": scheme, "salt": b64(salt), "key": b64(key_blob),
            "commitment": commit(scheme, salt, key_blob)}


def parse_opening(doc: dict[str, Any] | str | bytes) -> Opening:
    """Parse an opening and check that it really opens the commitment it names.

    Args:
        doc: the opening as a dict, or its JSON text.

    Raises:
        EvidenceError: a missing or malformed field, or a commitment that these scheme, salt
            and key do not open.
    """
    if isinstance(doc, (str, bytes)):
        doc = loads_strict(doc, "opening")
    if not isinstance(doc, dict):
        raise EvidenceError(f"an opening is a JSON object, received {type(doc).__name__}")
    for field in ("scheme", "salt", "key", "commitment"):
        if not isinstance(doc.get(field), str):
            raise EvidenceError(f"opening: the {field!r} field is missing or not a string "
                                "(make openings with `hallmark open`)")
    if not _HEX64.fullmatch(doc["commitment"]):
        raise EvidenceError(f"opening: commitment must be 64 lower-case hex characters, "
                            f"received {doc['commitment'][:70]!r}")
    opening = Opening(doc["scheme"], unb64(doc["salt"]), unb64(doc["key"]), doc["commitment"])
    _check_inputs(opening.scheme, opening.salt, opening.key_blob)
    if not verify_opening(opening.commitment, opening.scheme, opening.salt, opening.key_blob):
        raise EvidenceError(f"opening does not open commitment {opening.commitment[:16]}…: the "
                            "scheme, salt or key differ from those committed to")
    return opening
