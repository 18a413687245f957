"""Finalizing a verification: the family-wise decision, the signed statement, the log entry.

Rules encoded here:
- The verdict's outcome is "attributed", "not attributed" or "inconclusive" (no attribution
  while some check ended in error, i.e. did not run: a missing check could have attributed).
- Only checks that ran count as tests; Holm's correction at HALLMARK_ALPHA runs over all of
  them (every commitment the verification covered), so the chance that a verification
  attributes an independent model to anyone is at most alpha. A scan's commitments whose
  requirement the suspect cannot satisfy are not tests: they are counted per scheme in the
  predicate's "scan" member, without a row each. In a scan, a row that ran and was not
  significant is compact (`_compact`); the claim of each scheme is stated once in "claims".
- A check that passes Holm attributes only when the scheme allows it (`may_attribute`) and its
  forgery cost is at least HALLMARK_MIN_FORGERY_BITS (`verifier.evidence.report.decide`);
  otherwise it is "integrity only" or "significant, forgeable" and names nobody. Each row
  states `forgery_bits` and its key's `screening`; the predicate states `min_forgery_bits`.
- A commitment logged after the suspect's digest was first seen by the registry cannot prove
  priority: it is flagged, and the verdict names the earliest attributed commitment that can.
- The statement is an in-toto Statement v1 (subject: the suspect's sha256) in a DSSE envelope.
  Every owner a check names is listed in the predicate; those with "signs": true (the target's
  owner and the attributed owners, when the registry holds their key) sign beside the registry.
  Bring-your-own-key owners are listed with "byok": true and never sign server-side.
- A report is never changed after signing: the Report row is created once (OneToOne), and
  corrections are new log entries.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone

from registry import evidence_proofs, translog, witnessing
from registry.hubreport import hub_evidence
from registry.identities import owner_identity, registry_identity
from registry.models import CHECKED, ENDPOINT, CheckResult, Owner, Report, Suspect, Verification
from verifier.evidence import dsse, intoto, logentry
from verifier.evidence.canonical import canonical_json
from verifier.evidence.identity import b64
from verifier.evidence.report import (
    PREDICATE_TYPE,
    assemble_report,
    consistency_field,
    decide,
    forgery_field,
    render_report,
)
from verifier.stats import holm

PAYLOAD_TYPE = dsse.PAYLOAD_TYPE_INTOTO
ATTRIBUTED, NOT_ATTRIBUTED, NOT_APPLICABLE, ERRORED = (
    "attributed", "not attributed", "not applicable", "error")
INCONCLUSIVE = "inconclusive"  # verdict only: no attribution, and some check did not run


def rfc3339(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def subject_digest(suspect: Suspect) -> str:
    """The file's SHA-256, or for an endpoint (no bytes to hash) SHA-256 of its URL."""
    if suspect.kind == ENDPOINT:
        return hashlib.sha256(suspect.url.encode()).hexdigest()
    return suspect.sha256


def first_seen(suspect: Suspect) -> datetime | None:
    """When the registry first saw these bytes (or this endpoint URL)."""
    same = (Suspect.objects.filter(kind=ENDPOINT, url=suspect.url) if suspect.kind == ENDPOINT
            else Suspect.objects.filter(sha256=suspect.sha256))
    return same.exclude(fetched_at=None).aggregate(t=Min("fetched_at"))["t"] or suspect.fetched_at


def _check_rows(v: Verification, seen: datetime | None) -> list[dict[str, Any]]:
    checks = list(v.checks.select_related("commitment__model__owner").order_by("commitment__log_index"))
    ran = [c for c in checks if c.status == CHECKED]
    decisions = dict(zip([c.pk for c in ran],
                         holm([c.log10_p for c in ran], settings.HALLMARK_ALPHA) if ran else [],
                         strict=True))
    rows = []
    for c in checks:
        d = decisions.get(c.pk)
        decision = (decide(d.reject, c.log10_p, c.may_attribute, settings.HALLMARK_MIN_FORGERY_BITS)
                    if d else NOT_APPLICABLE if c.status != "error" else ERRORED)
        cm = c.commitment
        rows.append({
            "scheme": c.scheme, "commitment": cm.digest, "model": str(cm.model.public_id),
            "model_name": f"{cm.model.name} v{cm.model.version}", "owner_keyid": cm.model.owner.keyid,
            "statistic": c.statistic, "n": c.n,
            "log10_p": None if c.log10_p is None else max(c.log10_p, -1e308),
            "p_value": None if c.log10_p is None else 10.0 ** c.log10_p,
            "null": c.null, "alpha": d.alpha if d else None,
            "adjusted_log10_p": d.adjusted_log10_p if d else None,
            "decision": decision, "queries": c.queries, "claim": c.claim,
            "details": c.details, "error": c.error,
            "commitment_log_index": cm.log_index, "registered_at": rfc3339(cm.created_at),
            "prior_to_first_sighting": bool(seen is None or cm.created_at < seen),
            **_forgery_fields(c, cm.screening_status),
        })
    return rows


def _forgery_fields(c: CheckResult, screening: str) -> dict[str, Any]:
    """What a forging registrant would face: the check's cost in bits, whether the scheme lets
    it name an owner, and how its key was screened at upload."""
    bits = None if c.log10_p is None else forgery_field(max(c.log10_p, -1e308))
    return {"forgery_bits": bits, "may_attribute": c.may_attribute, "screening": screening}


def _verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    hits = [r for r in rows if r["decision"] == ATTRIBUTED]
    valid = [r for r in hits if r["prior_to_first_sighting"]]
    best = min(valid, key=lambda r: r["commitment_log_index"]) if valid else None
    missing = sum(1 for r in rows if r["decision"] == ERRORED)
    return {
        # "inconclusive" when no owner is attributed but a check that could have attributed
        # did not run: a plain "not attributed" is never signed while checks are missing.
        "outcome": ATTRIBUTED if best else INCONCLUSIVE if missing else NOT_ATTRIBUTED,
        "checks_missing": missing,
        "attributed": bool(best),
        "owner_keyid": best["owner_keyid"] if best else None,
        "model": best["model"] if best else None,
        "earliest_commitment": best["commitment"] if best else None,
        "matching_commitments": [r["commitment"] for r in hits],
        "without_priority": [r["commitment"] for r in hits if not r["prior_to_first_sighting"]],
        "disputed": len({r["owner_keyid"] for r in hits}) > 1,
    }


def _owners(v: Verification, rows: list[dict[str, Any]]) -> tuple[list[Owner], set[str]]:
    """Every owner a check names (plus the target's), and the keyids that sign the report:
    the target's owner and the attributed owners, when the registry holds their key."""
    named = {r["owner_keyid"] for r in rows}
    if v.target is not None:
        named.add(v.target.owner.keyid)
    owners = sorted(Owner.objects.filter(keyid__in=named), key=lambda o: o.keyid)
    wanted = {r["owner_keyid"] for r in rows if r["decision"] == ATTRIBUTED}
    if v.target is not None:
        wanted.add(v.target.owner.keyid)
    return owners, {o.keyid for o in owners if o.keyid in wanted and not o.byok}


# What a scan's not-significant row leaves out: the scheme's claim (once per scheme in the
# predicate's "claims"), the scheme's details, and what the "commitments" list already says.
_FULL_ONLY = ("claim", "details", "error", "adjusted_log10_p", "commitment_log_index",
              "registered_at", "prior_to_first_sighting")


def _compact(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A scan's rows: every test that ran keeps what Holm and `hallmark audit` recompute from
    (statistic, n, log10_p, p_value, null, alpha, decision, forgery_bits, may_attribute); the
    rows that were not significant drop `_FULL_ONLY`. Significant, attributing, not
    applicable and error rows stay in full."""
    return [{k: x for k, x in r.items() if k not in _FULL_ONLY}
            if r["decision"] == NOT_ATTRIBUTED else r for r in rows]


def _scan_field(v: Verification) -> dict[str, Any]:
    """A scan's selection, signed: the registry up to which log index, the suspect's profile,
    how many commitments it held, how many were candidates (one row each in "checks") and,
    per scheme, how many could not apply to this suspect (no row, no test, not in Holm)."""
    if not v.scan:
        return {}
    return {"scan": {k: v.scan[k] for k in ("log_index", "profile", "commitments", "candidates",
                                            "not_applicable")}}


def build_statement(v: Verification, signed_at: datetime) -> tuple[dict[str, Any], list[Owner]]:
    suspect = v.suspect
    seen = first_seen(suspect)
    rows = _check_rows(v, seen)
    owners, signing = _owners(v, rows)
    reg = registry_identity()
    predicate = {
        "verification": str(v.public_id),
        "registry": {"origin": settings.HALLMARK_LOG_ORIGIN, "keyid": reg.keyid,
                     "public_key": b64(reg.public_key)},
        "owners": [{"keyid": o.keyid, "public_key": b64(bytes(o.public_key)), "byok": o.byok,
                    "signs": o.keyid in signing} for o in owners],
        "suspect": {"url": suspect.url, "kind": suspect.kind, "format": suspect.format,
                    "size": suspect.size, "first_seen": rfc3339(seen)},
        "target_model": str(v.target.public_id) if v.target else None,
        "alpha": settings.HALLMARK_ALPHA,
        "min_forgery_bits": settings.HALLMARK_MIN_FORGERY_BITS,
        "correction": "holm",
        "tests_run": sum(1 for r in rows if r["alpha"] is not None),
        **_scan_field(v),
        "queries": v.queries,
        "checks": _compact(rows) if v.scan else rows,
        **({"claims": {r["scheme"]: r["claim"] for r in rows if r["claim"]}} if v.scan else {}),
        "commitments": [{"digest": r["commitment"], "scheme": r["scheme"],
                         "log_index": r["commitment_log_index"],
                         "registered_at": r["registered_at"],
                         "proves_priority": r["prior_to_first_sighting"]} for r in rows],
        "verdict": _verdict(rows),
        # declared provenance (signatures the suspect carries): beside the verdict, never in it
        **({"provenance": v.provenance} if v.provenance else {}),
        "times": {"submitted": rfc3339(v.submitted_at), "fetched": rfc3339(v.fetched_at),
                  "finished": rfc3339(v.finished_at), "signed": rfc3339(signed_at)},
    }
    name, digest = suspect.url, subject_digest(suspect)
    hub = hub_evidence(suspect, (details for details in  # read only for a Hub suspect
                                 v.checks.values_list("details", flat=True).iterator()))
    if hub is not None:  # the subject binds the header and per-tensor digests read
        predicate["suspect"]["hub"] = hub
        name, digest = f"hf://{hub['repo']}@{hub['commit']}", hub["subject_sha256"]
    signers = [o for o in owners if o.keyid in signing]
    return intoto.statement(name, digest, PREDICATE_TYPE, predicate), signers


def finalize(v: Verification) -> Report:
    """Sign, log and store the report of a verification whose checks are all done (idempotent)."""
    existing = Report.objects.filter(verification=v).first()
    if existing is not None:
        if existing.document is None and existing.log_index is not None:
            store_document(existing)  # a finalize that died between commit and storing
        return existing
    signed_at = timezone.now()
    statement, owners = build_statement(v, signed_at)
    signers = [registry_identity()] + [i for i in map(owner_identity, owners) if i is not None]
    envelope = dsse.sign_envelope(canonical_json(statement), PAYLOAD_TYPE, signers)
    envelope_bytes = canonical_json(envelope)
    try:
        with transaction.atomic():
            report = Report.objects.create(verification=v, envelope=envelope_bytes.decode())
            entry = translog.append("report", logentry.report_entry(envelope))
            report.log_index = entry.index
            report.save(update_fields=["log_index"])
    except IntegrityError:  # finalized concurrently: the first report stands
        return Report.objects.get(verification=v)
    store_document(report)
    return report


def report_document(report: Report, since: int | None = None) -> dict[str, Any]:
    """The public, self-contained report: envelope, log proof bundle, registry key, and the
    log proofs of every commitment and owner it cites and of every countersignature.

    Every proof is against one published checkpoint (witness-cosigned when witnesses are
    configured), read once. With `since` (the size of a checkpoint the auditor kept), it also
    carries a consistency proof from that size to that same checkpoint.
    """
    snap = witnessing.snapshot(covering=report.log_index + 1)
    consistency = None
    if since is not None:
        old, new = sorted((since, snap.size))
        consistency = consistency_field(old, new, translog.consistency(old, new))
    doc = assemble_report(json.loads(report.envelope), log_index=report.log_index,
                          bundle=snap.bundle(report.log_index),
                          origin=settings.HALLMARK_LOG_ORIGIN,
                          registry_public_key=registry_identity().public_key,
                          consistency=consistency,
                          commitment_proofs=evidence_proofs.commitment_proofs(report, snap),
                          owner_proofs=evidence_proofs.owner_proofs(report, snap),
                          countersignatures=evidence_proofs.countersignatures(report, snap))
    return doc


def store_document(report: Report) -> bytes:
    """Render the served document now, against the checkpoint published now, and store its
    bytes and strong ETag on the report row; returns the bytes.

    Called once at signing, again when a countersignature is logged (the only thing that
    changes what is served), and by migration 0008 for reports signed before documents were
    stored. The row lock orders concurrent re-renders, so the last one stored includes every
    countersignature committed before it.

    Args:
        report: a signed and logged report (`log_index` set).

    Returns:
        The canonical JSON bytes now served at GET /api/reports/<id>.

    Raises:
        ValueError: the report has no log index yet (it was never appended to the log).
    """
    if report.log_index is None:
        raise ValueError(f"report {report.public_id} has no log index: finalize() logs it "
                         f"before its document can be stored")
    with transaction.atomic():
        Report.objects.select_for_update().filter(pk=report.pk).values_list("pk").first()
        body = render_report(report_document(report))
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        Report.objects.filter(pk=report.pk).update(document=body, etag=etag)
    report.document, report.etag = body, etag
    _forget(report.public_id)  # this process serves the new bytes at once
    return body


_SERVED: OrderedDict[str, tuple[str, bytes, float]] = OrderedDict()  # id -> etag, bytes, checked
_SERVED_MAX_BYTES = 64 << 20  # documents this process keeps, least recently served out first
# A process serves bytes whose ETag it checked this recently without asking the database. A
# document changes only when an owner countersigns (the process that stores it forgets its
# copy at once; other processes within this many seconds), and REPORT_CACHE lets any cache
# keep it for 60 s anyway.
FRESH_SECONDS = 5.0
_served_lock = threading.Lock()


def served_document(public_id: str, unneeded: Callable[[str], bool] = lambda etag: False
                    ) -> tuple[str, bytes] | None:
    """(strong ETag, bytes) of the document served for a report; None when there is no such
    report.

    No query when this process checked the report's ETag less than FRESH_SECONDS ago; else
    one query reads the ETag, and the bytes come from this process's memory when it holds
    them for that ETag, from a second query otherwise. When `unneeded(etag)` (the client's
    If-None-Match names it) the bytes are not read, and b"" is returned.
    """
    key = str(public_id)
    now = time.monotonic()
    with _served_lock:
        hit = _SERVED.get(key)
    if hit is not None and now - hit[2] < FRESH_SECONDS:
        return hit[0], b"" if unneeded(hit[0]) else hit[1]
    found = list(Report.objects.filter(public_id=public_id).values_list("etag", flat=True)[:1])
    if not found:
        return None
    etag = found[0]
    if hit is not None and etag and hit[0] == etag:
        _remember(key, etag, hit[1], now)
        return etag, b"" if unneeded(etag) else hit[1]
    if etag and unneeded(etag):
        return etag, b""
    rows = list(Report.objects.filter(public_id=public_id).values_list("document", "etag")[:1])
    if not rows:
        return None  # deleted in between
    body, etag = rows[0]
    if body is None:  # signed before documents were stored, and not backfilled yet
        report = Report.objects.get(public_id=public_id)
        body, etag = store_document(report), report.etag
    _remember(key, etag, bytes(body), now)
    return etag, bytes(body)


def _remember(key: str, etag: str, body: bytes, checked: float) -> None:
    with _served_lock:
        _SERVED[key] = (etag, body, checked)
        _SERVED.move_to_end(key)
        total = sum(len(b) for _, b, _ in _SERVED.values())
        while total > _SERVED_MAX_BYTES and len(_SERVED) > 1:
            _, (_, dropped, _) = _SERVED.popitem(last=False)
            total -= len(dropped)


def _forget(public_id: object) -> None:
    with _served_lock:
        _SERVED.pop(str(public_id), None)


def statement_of(report: Report) -> dict[str, Any]:
    """The signed statement, decoded (for pages and the API's summary)."""
    return json.loads(base64.b64decode(json.loads(report.envelope)["payload"]))


def outcome_of(verdict: dict[str, Any]) -> str:
    """A signed verdict's outcome; reports signed before outcomes existed derive it."""
    return verdict.get("outcome") or (ATTRIBUTED if verdict["attributed"] else NOT_ATTRIBUTED)
