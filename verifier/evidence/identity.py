"""Ed25519 identities (registry and owners), and key files for the CLI.

The base64 helpers (`b64`, `unb64`, `unb64_strict`) live in `verifier.evidence.encoding` and
are re-exported here.

Key ids: `keyid` is the lower-case hex SHA-256 of the raw 32-byte public key. It is what DSSE
signatures carry in their `keyid` field and what reports use to name owners and the registry.

Key files (JSON, UTF-8):
- private: `{"type": "hallmark-ed25519-private", "seed": "<base64 of the 32-byte seed>"}`,
  written with mode 0600 and never overwritten silently;
- public: `{"type": "hallmark-ed25519-public", "keyid": "<hex>", "ed25519": "<base64>"}`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nacl.exceptions
import nacl.signing

from verifier.evidence.encoding import b64, short_repr, unb64, unb64_strict
from verifier.evidence.errors import EvidenceError
from verifier.evidence.vkey import parse_vkey

__all__ = [  # b64, unb64 and unb64_strict are re-exported from encoding
    "PRIVATE_KEY_TYPE", "PUBLIC_KEY_TYPE", "Identity", "b64", "keyid_of", "load_public_key",
    "parse_public_key", "private_key_json", "public_key_json", "read_private_key", "unb64",
    "unb64_strict", "verify_signature", "write_private_key", "write_public_key"]

PRIVATE_KEY_TYPE = "hallmark-ed25519-private"
PUBLIC_KEY_TYPE = "hallmark-ed25519-public"
def keyid_of(public_key: bytes) -> str:
    """The key id of a raw Ed25519 public key: lower-case hex SHA-256 of its 32 bytes.

    Example:
        >>> keyid_of(bytes(32))[:16]
        '66687aadf862bd77'
    """
    _check_public_key(public_key)
    return hashlib.sha256(public_key).hexdigest()


def _check_public_key(public_key: bytes) -> None:
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != 32:
        got = len(public_key) if isinstance(public_key, (bytes, bytearray)) else type(public_key).__name__
        raise EvidenceError(f"an Ed25519 public key is 32 raw bytes, received {got}")


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public_key`.

    Never raises on bad input: a malformed key or signature simply does not verify.

    Example:
        >>> me = Identity.from_seed(bytes(32))
        >>> verify_signature(me.public_key, b"hi", me.sign(b"hi"))
        True
        >>> verify_signature(me.public_key, b"hi!", me.sign(b"hi"))
        False
    """
    if not all(isinstance(x, (bytes, bytearray)) for x in (public_key, message, signature)):
        return False
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(bytes(public_key)).verify(bytes(message), bytes(signature))
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False


class Identity:
    """An Ed25519 signing identity (the registry's, or an owner's).

    Example:
        >>> me = Identity.from_seed(bytes(range(32)))
        >>> len(me.public_key), len(me.keyid), len(me.sign(b"x"))
        (32, 64, 64)
        >>> Identity.from_seed(me.seed).keyid == me.keyid
        True
    """

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._key = signing_key

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity from the operating system's random source."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed32: bytes) -> Identity:
        """The identity whose RFC 8032 private seed is `seed32` (32 bytes)."""
        if not isinstance(seed32, (bytes, bytearray)) or len(seed32) != 32:
            got = len(seed32) if isinstance(seed32, (bytes, bytearray)) else type(seed32).__name__
            raise EvidenceError(f"an Ed25519 seed is 32 bytes, received {got}")
        return cls(nacl.signing.SigningKey(bytes(seed32)))

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed (secret)."""
        return bytes(self._key)

    @property
    def public_key(self) -> bytes:
        """The 32-byte raw public key."""
        return bytes(self._key.verify_key)

    @property
    def keyid(self) -> str:
        """Hex SHA-256 of the public key."""
        return keyid_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message` (deterministic, RFC 8032)."""
        return self._key.sign(bytes(message)).signature

    def __repr__(self) -> str:
        return f"Identity(keyid={self.keyid[:16]}…)"


# --- key files -------------------------------------------------------------------------------


def private_key_json(identity: Identity) -> dict[str, str]:
    """The private key file's JSON object."""
    return {"type": PRIVATE_KEY_TYPE, "seed": b64(identity.seed)}


def write_private_key(path: str | os.PathLike[str], identity: Identity, *,
                      overwrite: bool = False) -> None:
    """Write a private key file with mode 0600.

    Args:
        path: where to write.
        identity: the identity to store.
        overwrite: replace an existing file (it is refused otherwise: losing a key is final).

    Raises:
        EvidenceError: the file exists and `overwrite` is False.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(os.fspath(path), flags, 0o600)
    except FileExistsError:
        raise EvidenceError(f"{path} already exists; refusing to overwrite a key file "
                            "(choose another path or delete it first)") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(json.dumps(private_key_json(identity), indent=2) + "\n")


def read_private_key(path: str | os.PathLike[str]) -> Identity:
    """Load a private key file written by `write_private_key` (or `hallmark keygen`).

    Raises:
        EvidenceError: unreadable, not JSON, wrong type or a seed that is not 32 bytes.
    """
    from verifier.evidence.canonical import loads_strict

    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise EvidenceError(f"cannot read key file {path}: {e.strerror}") from None
    doc = loads_strict(raw, f"key file {path}")
    if not isinstance(doc, dict) or doc.get("type") != PRIVATE_KEY_TYPE:
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise EvidenceError(f"{path} is not a Hallmark private key: expected type "
                            f"{PRIVATE_KEY_TYPE!r}, received {got!r} (make one with "
                            "`hallmark keygen --out FILE`)")
    return Identity.from_seed(unb64(doc.get("seed", "")))


def public_key_json(public_key: bytes) -> dict[str, str]:
    """The public key file's JSON object: type, keyid and base64 key."""
    return {"type": PUBLIC_KEY_TYPE, "keyid": keyid_of(public_key), "ed25519": b64(public_key)}


def write_public_key(path: str | os.PathLike[str], public_key: bytes) -> None:
    """Write a public key file (mode 0644)."""
    Path(path).write_text(json.dumps(public_key_json(public_key), indent=2) + "\n",
                          encoding="utf-8")


def parse_public_key(text: str) -> bytes:
    """A raw Ed25519 public key from any of the forms Hallmark prints.

    Accepted: a public key file's JSON (or any object with "ed25519" and optional "keyid",
    as in a report's `public_keys`), a C2SP vkey (`name+hex8+base64(0x01‖key)`), or the bare
    base64 of the 32 raw bytes.

    Raises:
        EvidenceError: none of these forms, or a keyid that does not match the key.
    """
    text = text.strip()
    if text.startswith("{"):
        from verifier.evidence.canonical import loads_strict

        doc = loads_strict(text, "public key")
        if not isinstance(doc, dict) or not isinstance(doc.get("ed25519"), str):
            raise EvidenceError('public key JSON needs an "ed25519" field holding base64')
        key = unb64(doc["ed25519"])
        _check_public_key(key)
        if "keyid" in doc and doc["keyid"] != keyid_of(key):
            raise EvidenceError(f"public key JSON says keyid {doc['keyid']!r} but the key's id "
                                f"is {keyid_of(key)}")
        return key
    try:
        key = unb64(text)
    except EvidenceError:
        key = b""
    if len(key) == 32:
        return key
    try:
        return parse_vkey(text)[1]
    except EvidenceError:
        raise EvidenceError(
            f"not a public key: {short_repr(text)}; expected a public key file, a note vkey "
            "(name+hex+base64) or the base64 of 32 raw bytes") from None


def load_public_key(file_or_text: str) -> bytes:
    """`parse_public_key` on a file's contents when `file_or_text` names a file, else on itself."""
    p = Path(file_or_text)
    try:
        if p.is_file():
            return parse_public_key(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise EvidenceError(f"cannot read public key file {file_or_text}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise EvidenceError(f"public key file {file_or_text} is not UTF-8 text") from None
    return parse_public_key(file_or_text)
