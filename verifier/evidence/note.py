"""C2SP signed notes (c2sp.org/signed-note) with Ed25519, and tlog checkpoints (c2sp.org/tlog-checkpoint).

A signed note is a text ending in a newline, a blank line, then one or more signature lines
"— <key name> base64(key ID ‖ signature)\\n" (em dash U+2014). For Ed25519 (signature type
0x01) the signature covers the text including its final newline, and

    key ID = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4]

A verifier ignores signatures from unknown keys, verifies every signature from a known key
(rejecting the note if one fails), rejects a note that no known key signed, and accepts at
least 16 signatures (this one accepts up to 100). A vkey (verifier key) is the text
"name+hex(key ID)+base64(0x01 ‖ public key)".

A checkpoint is a note whose text is "<origin>\\n<tree size>\\n<base64 root hash>\\n" followed
by optional non-empty extension lines. Hallmark's log signs its checkpoints with the registry
key, under a key name equal to the origin.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from verifier.evidence.encoding import b64, unb64_strict
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, verify_signature
from verifier.evidence.vkey import ED25519, check_name, key_id, parse_vkey, vkey

__all__ = [  # ED25519, key_id, parse_vkey and vkey are re-exported from vkey
    "ED25519", "MAX_SIGNATURES", "Checkpoint", "checkpoint_body", "key_id",
    "parse_checkpoint", "parse_vkey", "sign_checkpoint", "sign_note", "split_note",
    "verify_checkpoint", "verify_note", "vkey"]

MAX_SIGNATURES = 100  # more signature lines than this make a note malformed
_SIG_PREFIX = "\u2014 "  # em dash, space
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Checkpoint:
    """A parsed tlog checkpoint body."""

    origin: str  # the log's identity, e.g. "hallmark.example/log"
    size: int  # number of leaves
    root: bytes  # 32-byte RFC 6962 root hash at that size
    extensions: tuple[str, ...] = ()  # opaque extension lines (Hallmark writes none)


def _check_text(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise EvidenceError(f"{what} must be text, received {type(text).__name__}")
    if not text.endswith("\n"):
        raise EvidenceError(f"malformed note: {what} must end with a newline")
    if _CONTROL.search(text):
        raise EvidenceError(f"malformed note: {what} holds a control character other than newline")


def sign_note(body: str, name: str, identity: Identity) -> str:
    """Sign `body` as a C2SP signed note with one Ed25519 signature.

    Args:
        body: the note text, ending with a newline (e.g. `checkpoint_body(...)`).
        name: the key name (for a log: its origin).
        identity: the signing key.

    Returns:
        body + "\\n" + "— name base64(key ID ‖ signature)\\n".
    """
    _check_text(body, "note text")
    sig = identity.sign(body.encode("utf-8"))
    return f"{body}\n{_SIG_PREFIX}{name} {b64(key_id(name, identity.public_key) + sig)}\n"


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text and its (key name, decoded signature blob) lines.

    Raises:
        EvidenceError: "malformed note: …".
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise EvidenceError("malformed note: not valid UTF-8") from None
    _check_text(note, "signed note")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise EvidenceError("malformed note: no blank line between the text and the signatures")
    text, lines = note[:cut + 1], note[cut + 2:].split("\n")[:-1]
    if not lines:
        raise EvidenceError("malformed note: no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise EvidenceError(f"malformed note: {len(lines)} signatures, over the limit of "
                            f"{MAX_SIGNATURES}")
    sigs = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise EvidenceError(f"malformed note: signature line {line[:40]!r} does not start "
                                "with an em dash and a space")
        fields = line[len(_SIG_PREFIX):].split(" ")
        if len(fields) != 2:
            raise EvidenceError(f"malformed note: signature line {line[:40]!r} is not "
                                "'— name signature'")
        check_name(fields[0])
        blob = unb64_strict(fields[1], f"signature of key {fields[0]}")
        if len(blob) < 5:
            raise EvidenceError(f"malformed note: signature of key {fields[0]} is too short")
        sigs.append((fields[0], blob))
    return text, sigs


def verify_note(note: str, verifier_keys: list[tuple[str, bytes]]) -> str:
    """Verify a signed note against known (name, Ed25519 public key) pairs; return its text.

    Unknown keys (name or key ID not matching a known key) are ignored. Every signature by a
    known key must verify, and at least one must be present.

    Raises:
        EvidenceError: malformed note, an invalid signature by a known key, an ambiguous
            verifier list, or no signature by any known key.

    Example:
        >>> me = Identity.from_seed(bytes(32))
        >>> verify_note(sign_note("hello\\n", "me.example", me), [("me.example", me.public_key)])
        'hello\\n'
    """
    known: dict[tuple[str, bytes], bytes] = {}
    for name, key in verifier_keys:
        kid = key_id(name, key)
        if (name, kid) in known and known[(name, kid)] != key:
            raise EvidenceError(f"ambiguous key {name}+{kid.hex()}: two verifier keys share a "
                                "name and key ID")
        known[(name, kid)] = key
    text, sigs = split_note(note)
    message = text.encode("utf-8")
    verified = 0
    for name, blob in sigs:
        found = known.get((name, blob[:4]))
        if found is None:
            continue
        if not verify_signature(found, message, blob[4:]):
            raise EvidenceError(f"invalid signature for key {name}+{blob[:4].hex()}: the note "
                                "text or the signature was changed")
        verified += 1
    if not verified:
        names = ", ".join(sorted({n for n, _ in known})) or "none given"
        raise EvidenceError(f"note has no verifiable signatures: none is by a known key "
                            f"({names})")
    return text


def checkpoint_body(origin: str, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> str:
    """The checkpoint note text "<origin>\\n<size>\\n<base64 root>\\n[extension lines]".

    Example:
        >>> checkpoint_body("hallmark.example/log", 3, bytes(32))
        'hallmark.example/log\\n3\\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\\n'
    """
    if not isinstance(origin, str) or not origin or "\n" in origin or _CONTROL.search(origin):
        raise EvidenceError(f"checkpoint origin must be a non-empty single line, received {origin!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise EvidenceError(f"checkpoint size must be an integer >= 0, received {size!r}")
    if not isinstance(root, (bytes, bytearray)) or len(root) != 32:
        raise EvidenceError("checkpoint root must be a 32-byte hash")
    for ext in extensions:
        if not ext or "\n" in ext or _CONTROL.search(ext):
            raise EvidenceError(f"checkpoint extension lines must be non-empty single lines, "
                                f"received {ext!r}")
    return "".join(f"{line}\n" for line in (origin, str(size), b64(bytes(root)), *extensions))


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse a checkpoint note text (the verified text, not the signed note).

    Raises:
        EvidenceError: "malformed checkpoint: …".
    """
    if not isinstance(body, str) or not body.endswith("\n"):
        raise EvidenceError("malformed checkpoint: the text must end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise EvidenceError(f"malformed checkpoint: {len(lines)} lines, expected origin, size "
                            "and root hash")
    if any(not line for line in lines):
        raise EvidenceError("malformed checkpoint: empty line in the checkpoint text")
    if not _DECIMAL.fullmatch(lines[1]):
        raise EvidenceError(f"malformed checkpoint: tree size {lines[1][:30]!r} is not a decimal "
                            "without leading zeros")
    root = unb64_strict(lines[2], "checkpoint root hash", 32)
    return Checkpoint(lines[0], int(lines[1]), root, tuple(lines[3:]))


def sign_checkpoint(origin: str, size: int, root: bytes, identity: Identity) -> str:
    """A checkpoint signed as a note under key name = origin (what the registry publishes)."""
    return sign_note(checkpoint_body(origin, size, root), origin, identity)


def verify_checkpoint(note: str, origin: str, public_key: bytes) -> Checkpoint:
    """Verify a checkpoint note signed by the log key (name = origin) and parse it.

    Raises:
        EvidenceError: a bad note (see `verify_note`) or a checkpoint for another origin.
    """
    cp = parse_checkpoint(verify_note(note, [(origin, public_key)]))
    if cp.origin != origin:
        raise EvidenceError(f"checkpoint is for origin {cp.origin!r}, expected {origin!r}")
    return cp
