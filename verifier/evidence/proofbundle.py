"""Offline inclusion proofs in the C2SP tlog-proof@v1 text format (c2sp.org/tlog-proof).

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional, unauthenticated; Hallmark writes none)
    index <N>
    <base64 hash>             (zero or more: the inclusion proof, leaf's sibling first)

    <signed checkpoint note, verbatim>

To verify (`verify_bundle`): check the checkpoint's signature with the log's key and its origin,
then the inclusion of leaf_hash(entry) at `index` in the checkpointed tree.
"""
from __future__ import annotations

from dataclasses import dataclass

from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64, unb64_strict
from verifier.evidence.merkle import leaf_hash, verify_inclusion
from verifier.evidence.note import Checkpoint, verify_checkpoint

HEADER = "c2sp.org/tlog-proof@v1"


@dataclass(frozen=True)
class Bundle:
    """A parsed tlog-proof: nothing in it is verified yet."""

    index: int  # the entry's zero-based log index
    proof: tuple[bytes, ...]  # inclusion proof hashes, leaf's sibling first
    checkpoint_note: str  # the signed checkpoint, verbatim
    extra: bytes | None = None  # opaque, unauthenticated extra data


def make_bundle(index: int, proof: list[bytes], checkpoint_note: str,
                extra: bytes | None = None) -> str:
    """Write a tlog-proof@v1 text.

    Args:
        index: the entry's log index.
        proof: its inclusion proof against the checkpoint's tree size.
        checkpoint_note: the signed checkpoint note (ends with a newline).
        extra: optional opaque bytes (not authenticated by anything).

    Returns:
        The proof text.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise EvidenceError(f"index must be an integer >= 0, received {index!r}")
    if any(not isinstance(h, (bytes, bytearray)) or len(h) != 32 for h in proof):
        raise EvidenceError("every inclusion proof hash must be 32 bytes")
    if not isinstance(checkpoint_note, str) or not checkpoint_note.endswith("\n"):
        raise EvidenceError("checkpoint_note must be a signed note ending with a newline")
    lines = [HEADER]
    if extra is not None:
        lines.append(f"extra {b64(extra)}")
    lines.append(f"index {index}")
    lines += [b64(bytes(h)) for h in proof]
    return "\n".join(lines) + "\n\n" + checkpoint_note


def parse_bundle(text: str) -> Bundle:
    """Parse a tlog-proof@v1 text strictly (canonical base64, no leading zeros).

    Raises:
        EvidenceError: "malformed proof bundle: …" naming the line.
    """
    def bad(why: str) -> EvidenceError:
        return EvidenceError(f"malformed proof bundle: {why}")

    if not isinstance(text, str):
        raise bad(f"expected text, received {type(text).__name__}")
    head, sep, note = text.partition("\n\n")
    if not sep or not note:
        raise bad("no blank line followed by a checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise bad(f"first line must be {HEADER!r}, received {lines[0][:40]!r}")
    pos, extra = 1, None
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = unb64_strict(lines[pos][6:], "extra data")
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise bad("missing the 'index N' line")
    digits = lines[pos][6:]
    if not digits.isascii() or not digits.isdigit() or (digits != "0" and digits[0] == "0"):
        raise bad(f"index {digits[:30]!r} is not a decimal without leading zeros")
    hashes = tuple(unb64_strict(h, f"inclusion proof hash {n}", 32)
                   for n, h in enumerate(lines[pos + 1:]))
    return Bundle(int(digits), hashes, note, extra)


def verify_bundle(entry: bytes, text: str, log_name: str, log_pubkey: bytes) -> Checkpoint:
    """Verify that `entry` is in the log, offline, from a tlog-proof text.

    Args:
        entry: the logged bytes (the leaf hash is computed here).
        text: the tlog-proof@v1 text.
        log_name: the log's key name, which is also its checkpoint origin.
        log_pubkey: the log's Ed25519 public key.

    Returns:
        The verified checkpoint the entry was proved against.

    Raises:
        EvidenceError: malformed bundle, a checkpoint that is not validly signed by the log or is
            for another origin, or an inclusion proof that does not lead to its root.
    """
    bundle = parse_bundle(text)
    try:
        cp = verify_checkpoint(bundle.checkpoint_note, log_name, log_pubkey)
    except EvidenceError as e:
        raise EvidenceError(f"checkpoint in the proof bundle: {e}") from None
    if bundle.index >= cp.size:
        raise EvidenceError(f"inclusion proof: index {bundle.index} is outside the checkpointed "
                            f"tree of size {cp.size}")
    if not verify_inclusion(leaf_hash(entry), bundle.index, cp.size, list(bundle.proof), cp.root):
        raise EvidenceError(f"inclusion proof fails: the entry at index {bundle.index} does not "
                            f"lead to the root of the checkpoint (size {cp.size}); the entry, "
                            "index or a proof hash was changed")
    return cp
