"""Witness cosignatures on checkpoints (c2sp.org/tlog-cosignature v1, Ed25519).

A cosignature is a signed-note signature line added to a checkpoint by a witness that checked
the checkpoint is consistent with every earlier one it saw for that log:

    — <witness name> base64(key ID ‖ u64 big-endian timestamp ‖ 64-byte Ed25519 signature)

    key ID  = SHA-256(witness name ‖ 0x0A ‖ 0x04 ‖ 32-byte public key)[:4]
    message = "cosignature/v1\\n" "time <timestamp>\\n" ‖ checkpoint note text

where <timestamp> is POSIX seconds in decimal without leading zeros (at most 2^63 - 1). A
witness's verifier key is a vkey with type byte 0x04: "name+hex(key ID)+base64(0x04 ‖ key)".
Cosignature lines of keys a verifier does not know are ignored; the log's own signature (type
0x01) never matches a witness key ID, and a cosignature never matches the log's.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, b64, verify_signature
from verifier.evidence.note import key_id, parse_vkey, split_note, vkey

COSIGNATURE_V1 = 0x04  # signed-note signature type of timestamped Ed25519 cosignatures
_MAX_TIMESTAMP = 2**63 - 1


@dataclass(frozen=True)
class Witness:
    """A witness an auditor or the registry trusts: its name and Ed25519 public key."""

    name: str  # the key name in its signature lines, e.g. "witness.example/w1"
    public_key: bytes  # 32-byte Ed25519 public key

    @property
    def vkey(self) -> str:
        """The witness's verifier key text (type 0x04)."""
        return vkey(self.name, self.public_key, COSIGNATURE_V1)

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID its signature lines carry."""
        return key_id(self.name, self.public_key, COSIGNATURE_V1)


@dataclass(frozen=True)
class Cosigned:
    """A cosignature that verified: who cosigned, and when (POSIX seconds)."""

    witness: Witness
    timestamp: int


def parse_witness_vkey(text: str) -> Witness:
    """A `Witness` from its vkey "name+hex8+base64(0x04 ‖ key)".

    Raises:
        EvidenceError: malformed, not a cosignature (type 0x04) key, or a wrong key ID.

    Example:
        >>> w = Witness("w.example/1", bytes(32))
        >>> parse_witness_vkey(w.vkey) == w
        True
    """
    name, key = parse_vkey(text, COSIGNATURE_V1)
    return Witness(name, key)


def signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs: header line, time line, then the checkpoint text."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) \
            or not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise EvidenceError(f"cosignature timestamp must be an integer in [0, 2^63-1], "
                            f"received {timestamp!r}")
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def cosign(checkpoint_text: str, name: str, identity: Identity, timestamp: int) -> str:
    """A cosignature line "— name base64(key ID ‖ timestamp ‖ signature)\\n".

    Args:
        checkpoint_text: the checkpoint's note text (no signature lines), ending with "\\n".
        name: the witness's key name.
        identity: the witness's signing key.
        timestamp: POSIX seconds of the cosignature.
    """
    if not checkpoint_text.endswith("\n"):
        raise EvidenceError("the cosigned checkpoint text must end with a newline")
    sig = identity.sign(signed_message(checkpoint_text, timestamp))
    blob = key_id(name, identity.public_key, COSIGNATURE_V1) + struct.pack(">Q", timestamp) + sig
    return f"\u2014 {name} {b64(blob)}\n"


def verify_cosignatures(note_text: str, witnesses: list[Witness]) -> list[Cosigned]:
    """Every valid cosignature on a signed checkpoint note by one of `witnesses`.

    Lines of unknown keys are ignored. A line whose name and key ID match a known witness but
    whose signature does not verify is an error: someone changed the checkpoint or the line.
    Two lines by one witness count once (the first).

    Raises:
        EvidenceError: a malformed note, or a known witness's cosignature that fails.
    """
    text, sigs = split_note(note_text)
    known = {(w.name, w.key_id): w for w in witnesses}
    found: dict[Witness, Cosigned] = {}
    for name, blob in sigs:
        w = known.get((name, blob[:4]))
        if w is None:
            continue
        if len(blob) != 4 + 8 + 64:
            raise EvidenceError(f"cosignature by witness {name} is {len(blob)} bytes, expected "
                                "76 (key ID, timestamp, Ed25519 signature)")
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        if timestamp > _MAX_TIMESTAMP or not verify_signature(
                w.public_key, signed_message(text, timestamp), blob[12:]):
            raise EvidenceError(f"invalid cosignature by witness {name}: the checkpoint or its "
                                "cosignature was changed (a forked log shows a checkpoint the "
                                "witness never cosigned)")
        found.setdefault(w, Cosigned(w, timestamp))
    return list(found.values())


def add_cosignatures(signed_note: str, lines: list[str]) -> str:
    """The note with cosignature lines appended (each "— name base64\\n"), duplicates dropped."""
    present = set(signed_note.split("\n"))
    extra = [ln for ln in dict.fromkeys(lines) if ln.rstrip("\n") not in present]
    return signed_note + "".join(extra)
