"""Runs the audit's checks in order (see the package docstring for the rules)."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from verifier.audit.envelope import EnvelopeChecks
from verifier.audit.fields import has_first_seen
from verifier.audit.log import LogChecks
from verifier.audit.owners import OwnerChecks
from verifier.audit.predicate import PredicateChecks
from verifier.audit.result import AuditResult, Check
from verifier.audit.reveal import RevealChecks
from verifier.audit.witnesses import WitnessChecks
from verifier.evidence.cosignature import Witness
from verifier.evidence.errors import EvidenceError


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


class _Auditor(EnvelopeChecks, PredicateChecks, LogChecks, WitnessChecks, OwnerChecks,
               RevealChecks):
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
        if has_first_seen(self.pred):
            self.step("priority", self.check_priority)
        self.step("log inclusion", self.check_inclusion)
        if "commitment_proofs" in self.report:
            self.step("commitment log", self.check_commitment_proofs)
            if has_first_seen(self.pred):
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
