"""The audit's witness check: a quorum of trusted witnesses cosigned the report's checkpoint(s)."""
from __future__ import annotations

from datetime import UTC, datetime

from verifier.audit.state import AuditState
from verifier.evidence.cosignature import verify_cosignatures
from verifier.evidence.errors import EvidenceError
from verifier.evidence.note import parse_checkpoint, split_note
from verifier.evidence.proofbundle import parse_bundle


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WitnessChecks(AuditState):
    """witnesses; returns what it established."""

    def _bundles(self) -> list[tuple[str, str]]:
        """(where, bundle text) of every log proof the report carries."""
        out = [("log", self.report["log"]["bundle"])]
        for member in ("commitment_proofs", "owner_proofs", "countersignatures"):
            for n, item in enumerate(self.report.get(member) or []):
                if isinstance(item, dict) and isinstance(item.get("bundle"), str):
                    out.append((f"{member}[{n}]", item["bundle"]))
        return out

    def check_witnesses(self) -> str:
        """Every checkpoint in the report carries valid cosignatures from at least `quorum` of
        the trusted witnesses (a forked or unwitnessed checkpoint has none)."""
        quorum = self.quorum if self.quorum is not None else len(self.witnesses)
        if not 1 <= quorum <= len(self.witnesses):
            raise EvidenceError(f"quorum {quorum} must lie between 1 and the number of trusted "
                                f"witnesses ({len(self.witnesses)}): pass --witness VKEY for each")
        seen: dict[str, str] = {}
        for where, text in self._bundles():
            note = parse_bundle(text).checkpoint_note
            if note in seen:
                continue
            try:
                cosigned = verify_cosignatures(note, self.witnesses)
            except EvidenceError as e:
                raise EvidenceError(f"{where}: {e}") from None
            size = parse_checkpoint(split_note(note)[0]).size
            if len(cosigned) < quorum:
                names = ", ".join(c.witness.name for c in cosigned) or "none"
                raise EvidenceError(f"{where}: the checkpoint of size {size} has {len(cosigned)} "
                                    f"valid cosignature(s) by trusted witnesses ({names}), the "
                                    f"quorum is {quorum}: it may be a forked view of the log")
            seen[note] = (f"size {size} by " + ", ".join(
                f"{c.witness.name} at {_when(c.timestamp)}" for c in cosigned))
        return (f"quorum {quorum} of {len(self.witnesses)} witness(es) met: checkpoint "
                + "; ".join(seen.values()))
