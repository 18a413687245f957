"""A tiny in-memory registry built only from `verifier.evidence`, issuing real signed reports.

Used by test_audit.py and test_cli_audit.py: every report it writes is what the registry's
finalize step produces (signed statement, logged entry, tlog-proof against a signed checkpoint).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from verifier.evidence import report as R
from verifier.evidence.canonical import canonical_json
from verifier.evidence.commitment import commit, make_opening
from verifier.evidence.dsse import sign_envelope
from verifier.evidence.identity import Identity
from verifier.evidence.logentry import log_entry, report_entry
from verifier.evidence.merkle import MemoryLog
from verifier.evidence.note import sign_checkpoint
from verifier.evidence.proofbundle import make_bundle
from verifier.result import TestResult
from verifier.stats import holm

ORIGIN = "hallmark.test/log"
REGISTRY = Identity.from_seed(b"\x01" * 32)
ALICE = Identity.from_seed(b"\x02" * 32)  # the true owner
MALLORY = Identity.from_seed(b"\x03" * 32)  # a forger, or an outsider
SUSPECT = b"the suspect model's bytes"
ALPHA = 1e-6
MIN_FORGERY_BITS = 80


@dataclass
class Registered:
    """A logged commitment and what its owner could later reveal."""

    owner: Identity
    scheme: str
    digest: str
    log_index: int
    registered_at: str
    entry: bytes
    opening: dict[str, str]


@dataclass
class MiniRegistry:
    log: MemoryLog = field(default_factory=MemoryLog)
    key: Identity = REGISTRY

    def commit(self, owner: Identity, key_blob: bytes, registered_at: str,
               scheme: str = "uchida", salt: bytes | None = None) -> Registered:
        salt = salt if salt is not None else hashlib.sha256(key_blob).digest()
        digest = commit(scheme, salt, key_blob)
        request = canonical_json({"type": "hallmark/commitment-request/v1", "model": "m-1",
                                  "scheme": scheme,
                                  "key_sha256": hashlib.sha256(key_blob).hexdigest()})
        env = sign_envelope(request, "application/vnd.hallmark.request+json", [owner])
        entry = log_entry("commitment", env, commitment=digest, scheme=scheme, model="m-1",
                          owner_keyid=owner.keyid, registered_at=registered_at)
        index = self.log.append(entry)
        return Registered(owner, scheme, digest, index, registered_at, entry,
                          make_opening(scheme, salt, key_blob))

    def filler(self, n: int) -> None:
        for i in range(n):
            self.log.append(b"other entry %d" % i)

    def checkpoint(self, size: int | None = None) -> str:
        size = self.log.size if size is None else size
        return sign_checkpoint(ORIGIN, size, self.log.root(size), self.key)

    def bundle(self, index: int) -> str:
        return make_bundle(index, self.log.inclusion_proof(index), self.checkpoint())

    def issue(self, results: Sequence[tuple[Registered, TestResult]], *,
              signers: Sequence[Identity] | None = None, byok: Sequence[Identity] = (),
              first_seen: str | None = None, with_priority: bool = False,
              tamper: Callable[[dict[str, Any]], None] | None = None,
              commitment_proofs: bool = False, subject: bytes = SUSPECT) -> dict[str, Any]:
        """Finalize a verification: Holm decisions, signed statement, log entry, report."""
        ran = [(c, r) for c, r in results if r.applicable]
        decisions = dict(zip([id(r) for _, r in ran],
                             holm([r.log10_p for _, r in ran], ALPHA) if ran else [], strict=True))
        checks = []
        for c, r in results:
            d = decisions.get(id(r))
            decision = (R.NOT_APPLICABLE if d is None else
                        R.decide(d.reject, r.log10_p, r.may_attribute, MIN_FORGERY_BITS))
            checks.append(R.check_entry(r, commitment=c.digest, model="m-1",
                                        owner_keyid=c.owner.keyid,
                                        alpha=d.alpha if d else None, decision=decision))
        owners = list({c.owner.keyid: c.owner for c, _ in results}.values())
        hits = [c for c, r in results if decisions.get(id(r)) and R.decide(
            decisions[id(r)].reject, r.log10_p, r.may_attribute, MIN_FORGERY_BITS) == R.ATTRIBUTED]
        valid = [c for c in hits if first_seen is None or c.registered_at < first_seen]
        earliest = min(valid, key=lambda c: c.log_index) if valid else None
        verdict: dict[str, Any] = {"attributed": bool(valid) if with_priority else bool(hits)}
        commitments = []
        for c, _ in results:
            extra = ({"proves_priority": first_seen is None or c.registered_at < first_seen}
                     if with_priority else {})
            commitments.append(R.commitment_ref(c.digest, c.scheme, c.log_index,
                                                c.registered_at, **extra))
        suspect = None
        if with_priority:
            verdict["earliest_commitment"] = earliest.digest if earliest else None
            suspect = {"first_seen": first_seen, "url": "http://127.0.0.1/stolen.onnx"}
        predicate = R.verification_predicate(
            verification="0b9d4f4e-0000-4000-8000-000000000001", registry_origin=ORIGIN,
            registry_public_key=self.key.public_key,
            owners=[R.owner_entry(o.public_key, byok=o in byok) for o in owners], alpha=ALPHA,
            checks=checks, verdict=verdict,
            times={"submitted": "2026-03-01T10:00:00Z", "fetched": "2026-03-01T10:00:01.5Z",
                   "finished": "2026-03-01T10:00:09Z", "signed": "2026-03-01T10:00:10Z"},
            commitments=commitments, suspect=suspect, min_forgery_bits=MIN_FORGERY_BITS)
        if tamper is not None:
            tamper(predicate)
        statement = R.report_statement("stolen.onnx", hashlib.sha256(subject).hexdigest(),
                                       predicate)
        if signers is None:
            signers = [self.key] + [o for o in owners if o not in byok]
        envelope = R.sign_report(statement, signers)
        index = self.log.append(report_entry(envelope))
        proofs = None
        if commitment_proofs:
            proofs = [R.commitment_proof_field(c.digest, c.entry, self.bundle(c.log_index))
                      for c, _ in results]
        return R.assemble_report(envelope, log_index=index, bundle=self.bundle(index),
                                 origin=ORIGIN, registry_public_key=self.key.public_key,
                                 commitment_proofs=proofs)


def result(log10_p: float, scheme: str = "uchida", statistic: float = 250, n: int = 256,
           may_attribute: bool = True) -> TestResult:
    """A TestResult as a scheme would return it."""
    return TestResult.from_log10_p(scheme, statistic, n, log10_p, "exact", queries=0,
                                   claim="the bits match", details={"bits": n},
                                   may_attribute=may_attribute)


def standard_report(**kw: Any) -> tuple[MiniRegistry, dict[str, Any]]:
    """Alice's watermark found (p = 1e-70) by a registry that logged other things first."""
    reg = MiniRegistry()
    reg.filler(3)
    alice = reg.commit(ALICE, b"alice's uchida key blob", "2026-01-05T09:00:00Z")
    reg.filler(2)
    return reg, reg.issue([(alice, result(-70.0))], **kw)
