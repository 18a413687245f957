"""C2SP signed-note verifier keys (vkeys) and key IDs, for Ed25519 (c2sp.org/signed-note).

    key ID = SHA-256(key name ‖ 0x0A ‖ type ‖ 32-byte public key)[:4]
    vkey   = "name+hex(key ID)+base64(type ‖ public key)"

Type 0x01 is a plain Ed25519 note signature (the log's checkpoints), 0x04 an Ed25519 witness
cosignature (c2sp.org/tlog-cosignature).
"""
from __future__ import annotations

import hashlib
import re

from verifier.evidence.encoding import b64, unb64_strict
from verifier.evidence.errors import EvidenceError

ED25519 = 0x01  # signed-note signature type of plain Ed25519


def check_name(name: str) -> None:
    """Refuse a key name that is empty or holds whitespace or '+' (signed-note key names)."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or "+" in name:
        raise EvidenceError(f"note key name must be non-empty, without spaces or '+', "
                            f"received {name!r}")


def key_id(name: str, public_key: bytes, sig_type: int = ED25519) -> bytes:
    """The 4-byte signed-note key ID of an Ed25519 key under `name`.

    `sig_type` is the signature type byte: 0x01 for plain Ed25519 notes (the default), 0x04 for
    Ed25519 witness cosignatures (c2sp.org/tlog-cosignature).
    """
    check_name(name)
    if len(public_key) != 32:
        raise EvidenceError(f"an Ed25519 public key is 32 bytes, received {len(public_key)}")
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def vkey(name: str, public_key: bytes, sig_type: int = ED25519) -> str:
    """The verifier key text "name+hex8+base64(type‖pubkey)" (type 0x01 unless given).

    Example:
        >>> vkey("PeterNeumann", bytes.fromhex(
        ...     "1a5cd907143c384c41e830c5bce12aa8817ec5649aaabf2c31388b35b2d744d6"))
        'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'
    """
    return (f"{name}+{key_id(name, public_key, sig_type).hex()}+"
            f"{b64(bytes([sig_type]) + public_key)}")


def parse_vkey(text: str, sig_type: int = ED25519) -> tuple[str, bytes]:
    """Parse a vkey into (name, 32-byte public key), checking its type byte and key ID.

    `sig_type` is the type byte required (0x01 for a log key, 0x04 for a witness's).

    Raises:
        EvidenceError: malformed, not Ed25519, or a key ID that does not match.
    """
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise EvidenceError(f"malformed vkey {text[:60]!r}: expected name+hex8+base64")
    name, hex_id, material = parts
    check_name(name)
    raw = unb64_strict(material, "vkey key material")
    if len(raw) != 33 or raw[0] != sig_type:
        raise EvidenceError(f"vkey {name}+{hex_id} is not an Ed25519 key of signature type "
                            f"0x{sig_type:02x} (type byte 0x{sig_type:02x} and 32 key bytes "
                            "expected)")
    if key_id(name, raw[1:], sig_type).hex() != hex_id:
        raise EvidenceError(f"vkey {name}+{hex_id}: the key ID does not match the key")
    return name, raw[1:]
