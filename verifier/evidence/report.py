"""Building blocks of a Hallmark report, in exactly the format `verifier.audit` checks.

The format itself is defined in `verifier.audit`'s docstring and docs/evidence.md. The registry
assembles a report with these functions, in this order:

    predicate = verification_predicate(...)                     # checks, owners, times, ...
    statement = report_statement(suspect_name, suspect_sha256, predicate)
    envelope  = sign_report(statement, [registry_identity, owner_identity, ...])
    index     = <append report_entry(envelope) to the log>
    bundle    = make_bundle(index, inclusion proof at checkpoint size, signed checkpoint)
    report    = assemble_report(envelope, log_index=index, bundle=bundle, origin=origin,
                                registry_public_key=registry_identity.public_key)
    served    = render_report(report)                           # bytes for /api/reports/<uuid>
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from verifier import forgery
from verifier.evidence.canonical import canonical_json
from verifier.evidence.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, b64, keyid_of
from verifier.evidence.intoto import statement
from verifier.evidence.note import vkey
from verifier.result import TestResult

REPORT_FORMAT = "hallmark/report/v1"
PREDICATE_TYPE = "https://hallmark.dev/verification/v1"
ATTRIBUTED, NOT_ATTRIBUTED, NOT_APPLICABLE = "attributed", "not attributed", "not applicable"
ERROR = "error"  # the check could not run (fetch or scheme failure): not a test, not counted
FORGEABLE = "significant, forgeable"  # passed Holm, but a seed search below the floor reaches it
INTEGRITY_ONLY = "integrity only"  # passed Holm on evidence that may not name an owner
RAN = (ATTRIBUTED, NOT_ATTRIBUTED, FORGEABLE, INTEGRITY_ONLY)  # the tests Holm counts
DECISIONS = (*RAN, NOT_APPLICABLE, ERROR)
# The "screening" of a check's key: screened against a reference panel, no panel of its domain
# existed at upload, or a key whose every random element derives from its seed.
SCREENINGS = ("screened", "unscreened", "not needed")


def decide(holm_reject: bool, log10_p: float, may_attribute: bool, min_forgery_bits: float) -> str:
    """The decision of one check that ran. Rules, in order:

    - Holm at the family alpha does not reject: "not attributed";
    - the scheme says the evidence may not name an owner (`may_attribute` false, e.g. an lsb
      mark without an owner signature): "integrity only";
    - its forgery cost (`verifier.forgery.forgery_bits`) is below `min_forgery_bits`:
      "significant, forgeable" (a seed search of about 1/p keys would reach it);
    - otherwise "attributed". Only "attributed" checks name an owner in the verdict.

    Example:
        >>> decide(True, -20.0, True, 80), decide(True, -30.0, True, 80)
        ('significant, forgeable', 'attributed')
    """
    if not holm_reject:
        return NOT_ATTRIBUTED
    if not may_attribute:
        return INTEGRITY_ONLY
    return ATTRIBUTED if forgery.attributes(True, log10_p, min_forgery_bits) else FORGEABLE


def forgery_field(log10_p: float) -> float | str:
    """A check's "forgery_bits": `forgery_bits(log10_p)`, or "inf" for p = 0 (or clamped at
    10^-1e308), since JSON holds no infinity."""
    bits = forgery.forgery_bits(log10_p)
    return "inf" if math.isinf(bits) or log10_p <= -1e308 else bits


def owner_entry(public_key: bytes, *, byok: bool = False, **extra: Any) -> dict[str, Any]:
    """One item of the predicate's "owners": keyid, base64 public key, byok flag (+ extras
    such as "name")."""
    return {"keyid": keyid_of(public_key), "public_key": b64(public_key), "byok": bool(byok),
            **extra}


def check_entry(result: TestResult, *, commitment: str, model: str, owner_keyid: str,
                alpha: float | None, decision: str, screening: str = "not needed"
                ) -> dict[str, Any]:
    """One item of the predicate's "checks", from a scheme's TestResult.

    Args:
        result: what the scheme's `test` returned.
        commitment: the commitment digest the key belongs to (hex).
        model: the registry's identifier of the registered model.
        owner_keyid: keyid of the model's owner.
        alpha: the Holm threshold this test faced (None when not applicable).
        decision: one of RAN (see `decide`) or "not applicable".
        screening: the key's screening, one of SCREENINGS.
    """
    if decision not in (*RAN, NOT_APPLICABLE):
        raise EvidenceError(f"decision must be one of {', '.join(RAN)} or not applicable, "
                            f"received {decision!r}")
    if (decision == NOT_APPLICABLE) != (not result.applicable):
        raise EvidenceError("decision 'not applicable' goes with exactly the results that are "
                            "not applicable")
    d = result.to_dict()
    return {"scheme": d["scheme"], "commitment": commitment, "model": model,
            "owner_keyid": owner_keyid, "statistic": d["statistic"], "n": d["n"],
            "log10_p": d["log10_p"], "p_value": d["p_value"], "null": d["null"],
            "alpha": alpha, "decision": decision, "queries": d["queries"],
            "claim": d["claim"], "details": d["details"],
            "forgery_bits": forgery_field(result.log10_p), "may_attribute": result.may_attribute,
            "screening": screening}


def commitment_ref(digest: str, scheme: str, log_index: int, registered_at: str,
                   **extra: Any) -> dict[str, Any]:
    """One item of the predicate's "commitments" (+ extras such as "proves_priority")."""
    return {"digest": digest, "scheme": scheme, "log_index": log_index,
            "registered_at": registered_at, **extra}


def verification_predicate(*, verification: str, registry_origin: str,
                           registry_public_key: bytes, owners: Sequence[Mapping[str, Any]],
                           alpha: float, checks: Sequence[Mapping[str, Any]],
                           verdict: Mapping[str, Any], times: Mapping[str, Any],
                           commitments: Sequence[Mapping[str, Any]],
                           suspect: Mapping[str, Any] | None = None,
                           min_forgery_bits: float = forgery.DEFAULT_MIN_FORGERY_BITS
                           ) -> dict[str, Any]:
    """The predicate of https://hallmark.dev/verification/v1 (tests_run is counted here:
    the checks that ran, i.e. whose decision is one of RAN). `min_forgery_bits` is the
    registry's floor that `decide` applied.

    `suspect` (optional) describes the suspect; its "first_seen" time enables priority checks.
    """
    extra = {} if suspect is None else {"suspect": dict(suspect)}
    return {**extra,"verification": verification,
            "registry": {"origin": registry_origin, "keyid": keyid_of(registry_public_key),
                         "public_key": b64(registry_public_key)},
            "owners": [dict(o) for o in owners], "alpha": alpha,
            "min_forgery_bits": min_forgery_bits,
            "tests_run": sum(1 for c in checks if c["decision"] in RAN),
            "checks": [dict(c) for c in checks], "verdict": dict(verdict), "times": dict(times),
            "commitments": [dict(c) for c in commitments]}


def report_statement(subject_name: str, sha256_hex: str, predicate: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto Statement of a report: subject = the suspect file's SHA-256."""
    return statement(subject_name, sha256_hex, PREDICATE_TYPE, dict(predicate))


def sign_report(statement_: Mapping[str, Any], identities: Iterable[Identity]) -> dict[str, Any]:
    """The DSSE envelope of a report: canonical JSON of the statement, signed by each identity
    (the registry's, and every owner whose key the registry holds)."""
    return sign_envelope(canonical_json(dict(statement_)), PAYLOAD_TYPE_INTOTO, identities)


def consistency_field(old_size: int, new_size: int, proof: Sequence[bytes]) -> dict[str, Any]:
    """The optional "consistency" member: a proof between an auditor's kept checkpoint size and
    the report checkpoint's size (smaller first)."""
    return {"old_size": old_size, "new_size": new_size, "proof": [b64(h) for h in proof]}


def commitment_proof_field(digest: str, entry: bytes, bundle: str) -> dict[str, Any]:
    """One item of the optional "commitment_proofs": a commitment's log entry and its tlog-proof."""
    return {"digest": digest, "entry": b64(entry), "bundle": bundle}


def owner_proof_field(keyid: str, statement: Mapping[str, Any], entry: bytes,
                      bundle: str) -> dict[str, Any]:
    """One item of the optional "owner_proofs": an owner's statement, its log entry and proof."""
    return {"keyid": keyid, "statement": dict(statement), "entry": b64(entry), "bundle": bundle}


def countersignature_field(keyid: str, sig: str, signed_at: str, entry: bytes,
                           bundle: str) -> dict[str, Any]:
    """One item of the optional "countersignatures": an owner's signature over the envelope's
    PAE, when it was made, and its log entry and proof."""
    return {"keyid": keyid, "sig": sig, "signed_at": signed_at, "entry": b64(entry),
            "bundle": bundle}


def _sorted(obj: Any) -> Any:
    """The same JSON value with every object's keys inserted in sorted order, so that any
    compact JSON renderer (e.g. Django REST framework's) writes exactly `canonical_json`."""
    if isinstance(obj, Mapping):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_sorted(v) for v in obj]
    return obj


def assemble_report(envelope: Mapping[str, Any], *, log_index: int, bundle: str, origin: str,
                    registry_public_key: bytes, consistency: Mapping[str, Any] | None = None,
                    commitment_proofs: Sequence[Mapping[str, Any]] | None = None,
                    owner_proofs: Sequence[Mapping[str, Any]] | None = None,
                    countersignatures: Sequence[Mapping[str, Any]] | None = None
                    ) -> dict[str, Any]:
    """The report document served at /api/reports/<uuid> (serve `render_report(report)`).

    Optional members are left out when empty."""
    report: dict[str, Any] = {
        "format": REPORT_FORMAT, "envelope": dict(envelope),
        "log": {"index": log_index, "bundle": bundle, "origin": origin},
        "public_keys": {"registry": {"keyid": keyid_of(registry_public_key),
                                     "ed25519": b64(registry_public_key),
                                     "vkey": vkey(origin, registry_public_key)}}}
    if consistency is not None:
        report["consistency"] = dict(consistency)
    if commitment_proofs:
        report["commitment_proofs"] = [dict(p) for p in commitment_proofs]
    if owner_proofs:
        report["owner_proofs"] = [dict(p) for p in owner_proofs]
    if countersignatures:
        report["countersignatures"] = [dict(p) for p in countersignatures]
    return _sorted(report)


def render_report(report: Mapping[str, Any]) -> bytes:
    """The exact bytes to serve and to audit: canonical JSON of the report."""
    return canonical_json(dict(report))


# verdict.outcome: "inconclusive" when no owner is attributed while some check ended in "error"
# (it did not run, and could have attributed); a plain "not attributed" needs every check run.
INCONCLUSIVE = "inconclusive"
OUTCOMES = (ATTRIBUTED, NOT_ATTRIBUTED, INCONCLUSIVE)
