"""The add-checkpoint rules of c2sp.org/tlog-witness, independent of any HTTP server.

Request body: "old <size>\\n", zero to 63 lines of base64 consistency-proof hashes, an empty
line, then the signed checkpoint note. The witness answers, in this order of checks:

    400  malformed body, checkpoint or proof line, a non-empty proof with old size 0, or an old
         size above the checkpoint's size (a shrinking tree)
    404  the checkpoint's origin is not a log this witness follows
    403  no signature by a key the witness trusts for that origin verifies
    409  the old size is not the size of the latest checkpoint this witness cosigned for the
         log (body: that size in decimal and a newline, Content-Type text/x.tlog.size), or the
         sizes are equal and the root hashes differ (a fork)
    422  the consistency proof from the cosigned checkpoint to this one does not verify
    200  the cosignature line(s), after the new (size, root) is persisted

Checking the old size and persisting the new checkpoint happen under one lock. A validly
signed checkpoint refused with 409 (same size, another root) or 422 is kept in
"<state>.refused.jsonl": beside the cosigned one, it proves the log equivocated.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from verifier.evidence.cosignature import cosign
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, unb64_strict
from verifier.evidence.merkle import verify_consistency
from verifier.evidence.note import Checkpoint, parse_checkpoint, split_note, verify_note
from verifier.witness.state import Latest, WitnessState

MAX_PROOF_LINES = 63  # the protocol's limit on consistency proof lines
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]*)")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status code, body and its content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _text(status: int, message: str) -> Answer:
    return Answer(status, (message + "\n").encode())


@dataclass(frozen=True)
class _Request:
    old: int
    proof: tuple[bytes, ...]
    note: str
    checkpoint: Checkpoint


def _parse(body: bytes) -> _Request:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise EvidenceError("the request body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise EvidenceError("no empty line between the old size/proof lines and the checkpoint")
    lines = head.split("\n")
    m = _OLD.fullmatch(lines[0])
    if m is None:
        raise EvidenceError(f"the first line must be 'old <size>' (decimal, no leading zeros), "
                            f"received {lines[0][:40]!r}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise EvidenceError(f"{len(lines) - 1} consistency proof lines, over the limit of "
                            f"{MAX_PROOF_LINES}")
    proof = tuple(unb64_strict(h, f"consistency proof line {n + 1}", 32)
                  for n, h in enumerate(lines[1:]))
    cp_text, _ = split_note(note)
    return _Request(int(m.group(1)), proof, note, parse_checkpoint(cp_text))


class Witness:
    """One witness: its name and key, the logs it follows, and its durable state.

    Args:
        name: the witness's key name (e.g. "witness.example/w1").
        identity: its Ed25519 signing key.
        logs: origin -> the log's Ed25519 public keys (any one of them may sign).
        state: where the latest cosigned checkpoint of each log is kept.
        clock: POSIX seconds for the cosignature timestamp.
    """

    def __init__(self, name: str, identity: Identity, logs: Mapping[str, Sequence[bytes]],
                 state: WitnessState, clock: Callable[[], float] = time.time) -> None:
        self.name, self.identity, self.state, self.clock = name, identity, state, clock
        self.logs = {origin: list(keys) for origin, keys in logs.items()}

    def add_checkpoint(self, body: bytes) -> Answer:
        """Answer one add-checkpoint request body (see the module docstring)."""
        try:
            req = _parse(body)
        except EvidenceError as e:
            return _text(400, f"malformed request: {e}")
        cp = req.checkpoint
        keys = self.logs.get(cp.origin)
        if keys is None:
            return _text(404, f"unknown log {cp.origin!r}: this witness does not follow it")
        try:
            verify_note(req.note, [(cp.origin, k) for k in keys])
        except EvidenceError as e:
            return _text(403, f"checkpoint not signed by a trusted key of {cp.origin}: {e}")
        if req.old > cp.size:
            return _text(400, f"old size {req.old} is above the checkpoint's size {cp.size}: a "
                              "tree never shrinks")
        if req.old == 0 and req.proof:
            return _text(400, "the consistency proof must be empty when the old size is 0")
        return self.state.update(lambda logs: self._advance(logs, req))

    def _advance(self, logs: dict[str, Latest], req: _Request) -> Answer:
        cp = req.checkpoint
        latest = logs.get(cp.origin, Latest(0, None))
        if req.old != latest.size:
            return Answer(409, f"{latest.size}\n".encode(), SIZE_CONTENT_TYPE)
        if req.old == cp.size and latest.root is not None and latest.root != cp.root:
            self.state.record_refusal(409, req.old, req.note)  # two roots for one size
            return Answer(409, f"{latest.size}\n".encode(), SIZE_CONTENT_TYPE)
        if req.old and not verify_consistency(req.old, cp.size, latest.root or b"", cp.root,
                                              req.proof):
            self.state.record_refusal(422, req.old, req.note)
            return _text(422, f"the consistency proof from size {req.old} to {cp.size} does not "
                              "verify against the checkpoint this witness cosigned")
        logs[cp.origin] = Latest(cp.size, cp.root)
        cp_text, _ = split_note(req.note)
        line = cosign(cp_text, self.name, self.identity, int(self.clock()))
        return Answer(200, line.encode())
