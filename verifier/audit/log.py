"""The audit's checks against the transparency log: inclusion, commitments, consistency."""
from __future__ import annotations

from verifier.audit.fields import parse_time, require
from verifier.audit.state import AuditState
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import unb64_strict
from verifier.evidence.logentry import parse_entry, report_entry
from verifier.evidence.merkle import verify_consistency
from verifier.evidence.note import verify_checkpoint
from verifier.evidence.proofbundle import parse_bundle, verify_bundle


class LogChecks(AuditState):
    """log inclusion, commitment log and consistency; each returns what it established."""

    def check_inclusion(self) -> str:
        log = self.report["log"]
        bundle = parse_bundle(log["bundle"])
        if bundle.extra is not None:
            raise EvidenceError("the report's proof bundle carries unauthenticated extra data; "
                                "Hallmark bundles have none")
        if bundle.index != log["index"]:
            raise EvidenceError(f"log.index is {log['index']} but the proof bundle is for index "
                                f"{bundle.index}")
        cp = verify_bundle(report_entry(self.report["envelope"]), log["bundle"], log["origin"],
                           self.registry_key)
        self.result.checkpoint, self.result.checkpoint_note = cp, bundle.checkpoint_note
        return (f"report entry {log['index']} is in {cp.origin} at size {cp.size} (checkpoint "
                "signed by the registry key)")

    def check_commitment_proofs(self) -> str:
        proofs = self.report["commitment_proofs"]
        listed = {c["digest"]: c for c in self.pred["commitments"]}
        if not isinstance(proofs, list) or not proofs:
            raise EvidenceError("commitment_proofs must be a non-empty list")
        owner_of = {c["commitment"]: c["owner_keyid"] for c in self.pred["checks"]}
        for n, item in enumerate(proofs):
            require(item, f"commitment_proofs[{n}]", {"digest": str, "entry": str, "bundle": str})
            c = listed.get(item["digest"])
            if c is None:
                raise EvidenceError(f"commitment_proofs[{n}] is for a commitment the report "
                                    "does not list")
            entry = unb64_strict(item["entry"], f"commitment_proofs[{n}].entry")
            fields = parse_entry(entry)
            if fields["type"] != "commitment" or fields["commitment"] != c["digest"] \
                    or fields["scheme"] != c["scheme"]:
                raise EvidenceError(f"commitment_proofs[{n}].entry does not log commitment "
                                    f"{c['digest'][:16]}… ({c['scheme']})")
            if "registered_at" in fields and fields["registered_at"] != c["registered_at"]:
                raise EvidenceError(f"commitment_proofs[{n}]: logged time differs from "
                                    "registered_at")
            if c["digest"] in owner_of and fields["owner_keyid"] != owner_of[c["digest"]]:
                raise EvidenceError(f"commitment_proofs[{n}]: the log entry names owner "
                                    f"{str(fields['owner_keyid'])[:16]}…, the checks another")
            logged = fields.get("registered_at", fields.get("time"))
            if isinstance(logged, str):
                self.logged_times[c["digest"]] = logged
            if parse_bundle(item["bundle"]).index != c["log_index"]:
                raise EvidenceError(f"commitment_proofs[{n}] proves another index than "
                                    f"log_index {c['log_index']}")
            try:
                verify_bundle(entry, item["bundle"], self.report["log"]["origin"],
                              self.registry_key)
            except EvidenceError as e:
                raise EvidenceError(f"commitment {c['digest'][:16]}…: {e}") from None
        missing = sorted(self._attributed() - {p["digest"] for p in proofs})
        if missing:
            raise EvidenceError(f"commitment {missing[0][:16]}… attributes the suspect but has no "
                                "log proof (commitment_proofs must cover every attributed "
                                "commitment)")
        return f"{len(proofs)} commitment(s) proved in the log at their log_index"

    def _attributed(self) -> set[str]:
        return {c["commitment"] for c in self.pred["checks"] if c["decision"] == "attributed"}

    def check_priority_proofs(self) -> str:
        """Priority from the proofs alone: each commitment claimed to prove priority was logged
        (the time inside its proved log entry) before the suspect was first seen."""
        first_seen = self.pred["suspect"]["first_seen"]
        proved, attributed = 0, self._attributed()
        for c in self.pred["commitments"]:
            if c.get("proves_priority") is not True or first_seen is None:
                continue
            logged = self.logged_times.get(c["digest"])
            if logged is None and c["digest"] not in attributed:
                continue  # claims nothing: no proof needed
            if logged is None:
                raise EvidenceError(f"commitment {c['digest'][:16]}… claims priority but its log "
                                    "entry carries no time")
            if parse_time(logged, "logged time") >= parse_time(first_seen, "suspect.first_seen"):
                raise EvidenceError(f"commitment {c['digest'][:16]}… was logged at {logged}, not "
                                    f"before the suspect was first seen ({first_seen})")
            proved += 1
        return (f"{proved} commitment(s) logged before the first sighting ({first_seen}), "
                "from their log proofs")

    def check_consistency(self) -> str:
        origin = self.report["log"]["origin"]
        try:
            kept = verify_checkpoint(self.since or "", origin, self.registry_key)
        except EvidenceError as e:
            raise EvidenceError(f"the kept checkpoint: {e}") from None
        now = self.result.checkpoint
        assert now is not None
        old, new = (kept, now) if kept.size <= now.size else (now, kept)
        if old.size == new.size:
            if old.root != new.root:
                raise EvidenceError(f"the log forked: two checkpoints of size {old.size} with "
                                    "different roots")
            return f"kept checkpoint (size {kept.size}) equals the report's checkpoint"
        c = self.consistency_arg if self.consistency_arg is not None \
            else self.report.get("consistency")
        if c is None:
            raise EvidenceError(f"no consistency proof between sizes {old.size} and {new.size}: "
                                f"fetch /api/reports/<uuid>?since={kept.size} or pass one")
        require(c, "consistency", {"old_size": int, "new_size": int, "proof": list})
        if (c["old_size"], c["new_size"]) != (old.size, new.size):
            raise EvidenceError(f"the consistency proof is for sizes {c['old_size']} -> "
                                f"{c['new_size']}, needed {old.size} -> {new.size}")
        proof = [unb64_strict(h, f"consistency proof hash {n}", 32)
                 for n, h in enumerate(c["proof"])]
        if not verify_consistency(old.size, new.size, old.root, new.root, proof):
            raise EvidenceError(f"consistency proof fails between sizes {old.size} and "
                                f"{new.size}: the log was forked or rewritten (or the proof "
                                "changed)")
        return f"kept checkpoint (size {kept.size}) is consistent with size {now.size}"
