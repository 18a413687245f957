"""Offline audit of a Hallmark report: `hallmark audit REPORT.json` and `verifier.audit.audit`.

THE REPORT FORMAT (hallmark/report/v1), as served by GET /api/reports/<uuid>. The served bytes
should be exactly `canonical_json(report)` (sorted keys, no whitespace, UTF-8). Every byte of
content is covered: the envelope by its signatures and by its log entry (which hashes the
canonical envelope), the proof and checkpoint by the log's signature and the Merkle proof, the
other fields by cross-checks against signed data, with base64 parsed canonically. A re-indented
copy of a report parses to the same content and passes; `strict_bytes=True` (`hallmark audit
--strict`) also refuses any encoding other than the canonical bytes (one trailing newline is
tolerated), so that not even whitespace may change.

    {
      "format": "hallmark/report/v1",
      "envelope": DSSE envelope {"payload": b64, "payloadType": "application/vnd.in-toto+json",
                                 "signatures": [{"keyid": hex, "sig": b64}, ...]},
      "log": {"index": N, "bundle": "<c2sp.org/tlog-proof@v1 text>", "origin": "<log origin>"},
      "public_keys": {"registry": {"keyid": hex, "ed25519": b64, "vkey": C2SP vkey}},
      "consistency": {"old_size": m, "new_size": n, "proof": [b64, ...]},           (optional)
      "commitment_proofs": [{"digest": hex, "entry": b64, "bundle": tlog-proof}]   (optional)
      "owner_proofs": [{"keyid", "statement": DSSE, "entry": b64, "bundle"}]       (optional)
      "countersignatures": [{"keyid", "sig": b64, "signed_at", "entry", "bundle"}] (optional)
    }
A bundle's checkpoint may carry witness cosignatures (verifier.evidence.cosignature).

The envelope's payload is canonical JSON of an in-toto Statement v1:
    subject: [{"name": suspect name, "digest": {"sha256": suspect file SHA-256}}]
    predicateType: "https://hallmark.dev/verification/v1"
    predicate: {
      "verification": uuid,
      "registry": {"origin", "keyid", "public_key": b64},
      "owners": [{"keyid", "public_key": b64, "byok": bool, "signs": bool (optional), ...}],
      "alpha": family-wise alpha, "tests_run": m (checks not "not applicable"),
      "checks": [{"scheme", "commitment", "model", "owner_keyid", "statistic", "n", "log10_p"
                  (number or "-inf"), "p_value", "null", "alpha" (Holm threshold, null when not
                  applicable), "decision", "queries", "claim", "details"}],
      "verdict": {"attributed": bool, "earliest": digest or null (optional),
                  "outcome": "attributed" | "not attributed" | "inconclusive" (optional),
                  "checks_missing": count of "error" checks (optional), ...},
      "times": {"submitted", "fetched" (null if the fetch failed), "finished", "signed",
                "first_seen" (optional)}: RFC 3339 UTC, "YYYY-MM-DDTHH:MM:SS[.ffffff]Z",
      "commitments": [{"digest", "scheme", "log_index", "registered_at",
                       "proves_priority" (optional bool), ...}],
      "suspect": {"first_seen": RFC 3339 UTC or null, ...}                          (optional)
    }
Checks, owners, commitments, verdict and suspect may carry further fields (e.g. "model_name");
a check whose decision is "not applicable" or "error" may hold null statistic/n/p/alpha.

Rules checked, in order (the audit stops at the first failure):
  format          strict JSON (no duplicate keys), canonical bytes if strict_bytes, known
                  top-level fields only, format string.
  registry key    public_keys.registry is a valid key whose keyid matches; equal to the pinned key
                  when one is given (otherwise the key in the report is trusted, and said so).
  envelope        DSSE structure; payloadType is in-toto.
  signatures      every signature verifies over PAE(payloadType, payload); every signer is the
                  registry or an owner listed in the predicate (else "unknown key"); the registry
                  and every owner listed with "signs": true (without "signs": every owner
                  without "byok": true) signed (else "signature removed"). A
                  bring-your-own-key owner's key never leaves the owner, so the registry cannot
                  add that signature; if it is present it must verify.
  statement       in-toto Statement v1, predicateType, one subject with a sha256 digest.
  predicate       field types; the predicate's registry key is the report's registry key;
                  owner keyids match their keys; each check names a listed commitment (same
                  scheme) and a listed owner; times are RFC 3339 UTC and in order.
  decisions       tests_run and every decision and per-check alpha follow Holm's procedure at
                  the family alpha over the checks that ran ("attributed"/"not attributed");
                  verdict.attributed is false when no check attributed.
  outcome         verdict.outcome (if present) is "attributed" when verdict.attributed, else
                  "inconclusive" when some check is an "error" (did not run), else "not
                  attributed"; verdict.checks_missing (if present) counts the "error" checks.
  priority        (when suspect.first_seen is given) proves_priority = registered_at <
                  first_seen (or first_seen is null); verdict.earliest_commitment (if present)
                  is the attributed commitment with priority and the smallest log index, or
                  null; verdict.attributed is true exactly when there is one.
  log inclusion   the entry report_entry(envelope) is included at log.index in the bundle's
                  checkpoint, which is signed by the registry key under the origin name.
  commitment log  (when commitment_proofs are given) every attributed commitment has one; each
                  commitment's entry is in the log at its log_index and names the checks' owner.
  priority proofs (with commitment_proofs and suspect.first_seen) each commitment marked
                  proves_priority was logged (the time in its proved entry) before first_seen.
  owner log       (when owner_proofs are given) each owner statement is signed by the registry
                  (and by the owner unless byok), is about a listed owner, and is in the log.
  countersignatures (when given) each is by a listed owner over the envelope's DSSE PAE, its
                  entry matches, and it is in the log; says who signed when.
  witnesses       (with witnesses) every checkpoint in the report carries at least `quorum`
                  valid cosignatures by the trusted witnesses; an invalid one fails.
  consistency     (with since_checkpoint) the auditor's kept checkpoint is signed by the
                  registry and consistent with the report's checkpoint (report "consistency"
                  member or the `consistency` argument holds the proof). A forked log fails.
  opening …       (with reveal) each opening opens a commitment the report lists, same scheme.
  suspect digest  (with suspect_path) the file's SHA-256 is the statement's subject.
  recompute       (with reveal and suspect_path) each opened check's statistic, n and log10 p
                  recomputed with the scheme from the suspect file equal the reported ones.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from verifier.audit_envelope import _EnvelopeChecks
from verifier.audit_fields import RAN, TOP_LEVEL, _has_first_seen
from verifier.audit_log import _LogChecks
from verifier.audit_owners import _OwnerChecks
from verifier.audit_predicate import _PredicateChecks
from verifier.audit_reveal import _RevealChecks
from verifier.audit_witness import _WitnessChecks
from verifier.evidence.cosignature import Witness
from verifier.evidence.errors import EvidenceError
from verifier.evidence.note import Checkpoint

__all__ = ["RAN", "TOP_LEVEL", "AuditResult", "Check", "audit"]


class Check(NamedTuple):
    """One audit check: its name, whether it passed, and why (or what it established)."""

    name: str
    ok: bool
    reason: str


@dataclass
class AuditResult:
    """The outcome of `audit`: every check run, in order (the first failure ends the audit)."""

    checks: list[Check] = field(default_factory=list)  # in the order they ran
    statement: dict[str, Any] | None = None  # the verified in-toto Statement, once verified
    checkpoint: Checkpoint | None = None  # the verified checkpoint of the report's log proof
    checkpoint_note: str | None = None  # that checkpoint's signed note (keep it for --since)

    @property
    def ok(self) -> bool:
        """True when at least one check ran and all passed."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failure(self) -> Check | None:
        """The failing check, if any."""
        return next((c for c in self.checks if not c.ok), None)


class _Stop(Exception):
    """Ends the audit after a failed check."""


def audit(report: Mapping[str, Any] | bytes | str, *, registry_key: bytes | None = None,
          since_checkpoint: str | None = None, reveal: Sequence[Mapping[str, Any]] | None = None,
          suspect_path: str | None = None, consistency: Mapping[str, Any] | None = None,
          strict_bytes: bool = False, witnesses: Sequence[Witness] = (),
          quorum: int | None = None) -> AuditResult:
    """Check a report offline: signatures, structure, log proofs and, optionally, the statistics.

    Args:
        report: the report as served (bytes or text: its canonical form is checked too) or
            already parsed (a dict: the byte-level canonical check is then skipped).
        registry_key: the registry's 32-byte Ed25519 public key, pinned by the auditor.
        since_checkpoint: a signed checkpoint note the auditor kept from an earlier audit.
        reveal: openings ({"scheme","salt","key","commitment"}) published by owners.
        suspect_path: the suspect file, to check its digest and recompute the statistics.
        consistency: {"old_size","new_size","proof"} between `since_checkpoint` and the report's
            checkpoint, when the report does not carry one.
        strict_bytes: refuse report bytes that are not exactly canonical JSON.
        witnesses: witnesses the auditor trusts (`verifier.evidence.cosignature.Witness`).
        quorum: how many of them must have cosigned each checkpoint in the report (default:
            all of them); checked only when `witnesses` are given.

    Returns:
        AuditResult with `.ok` and `.checks` (name, ok, reason).

    Example:
        >>> audit(b"{}").failure.name
        'format'
    """
    a = _Auditor(registry_key, since_checkpoint, reveal, suspect_path, consistency, strict_bytes)
    a.witnesses, a.quorum = list(witnesses), quorum
    with contextlib.suppress(_Stop):
        a.run(report)
    return a.result


class _Auditor(_EnvelopeChecks, _PredicateChecks, _LogChecks, _WitnessChecks, _OwnerChecks,
               _RevealChecks):
    """Runs the checks in order; the checks themselves live in verifier.audit_*."""

    def __init__(self, registry_key: bytes | None, since: str | None,
                 reveal: Sequence[Mapping[str, Any]] | None, suspect_path: str | None,
                 consistency: Mapping[str, Any] | None, strict_bytes: bool) -> None:
        self.pinned, self.since, self.reveal = registry_key, since, reveal
        self.strict_bytes = strict_bytes
        self.suspect_path, self.consistency_arg = suspect_path, consistency
        self.result = AuditResult()
        self.report: dict[str, Any] = {}
        self.registry_key = b""
        self.statement: dict[str, Any] = {}
        self.pred: dict[str, Any] = {}
        self.opened: dict[str, Any] = {}
        self.payload = b""
        self.witnesses: list[Witness] = []
        self.quorum: int | None = None
        self.logged_times: dict[str, str] = {}

    def step(self, name: str, fn: Callable[[], str], broad: bool = False) -> None:
        """Run one check; a failure is recorded with its reason and ends the audit."""
        try:
            reason = fn()
        except EvidenceError as e:
            self.result.checks.append(Check(name, False, str(e)))
            raise _Stop from None
        except Exception as e:
            if not broad:
                raise
            self.result.checks.append(Check(name, False, f"{type(e).__name__}: {e}"))
            raise _Stop from None
        self.result.checks.append(Check(name, True, reason))

    def run(self, report: Mapping[str, Any] | bytes | str) -> None:
        self.step("format", lambda: self.check_format(report))
        self.step("registry key", self.check_registry_key)
        self.step("envelope", self.check_envelope)
        self.step("signatures", self.check_signatures)
        self.step("statement", self.check_statement)
        self.step("predicate", self.check_predicate)
        self.step("decisions", self.check_decisions)
        if "outcome" in self.pred["verdict"]:  # reports made before outcomes existed omit it
            self.step("outcome", self.check_outcome)
        if _has_first_seen(self.pred):
            self.step("priority", self.check_priority)
        self.step("log inclusion", self.check_inclusion)
        if "commitment_proofs" in self.report:
            self.step("commitment log", self.check_commitment_proofs)
            if _has_first_seen(self.pred):
                self.step("priority proofs", self.check_priority_proofs)
        if "owner_proofs" in self.report:
            self.step("owner log", self.check_owner_proofs)
        if "countersignatures" in self.report:
            self.step("countersignatures", self.check_countersignatures)
        if self.witnesses:
            self.step("witnesses", self.check_witnesses)
        if self.since is not None:
            self.step("consistency", self.check_consistency)
        for n, doc in enumerate(self.reveal or []):
            self.step(f"opening {n + 1}", functools.partial(self.check_opening, doc))
        if self.suspect_path is not None:
            self.step("suspect digest", self.check_suspect_digest)
            if self.reveal:  # without openings only the file's digest can be checked
                self.step("recompute", self.check_recompute, broad=True)
