"""Owners' countersignatures of reports: verified over the envelope's DSSE PAE, stored, logged.

The envelope itself never changes (a report is never changed after signing); the served report
carries each countersignature beside it with its log entry and proof.
"""
from __future__ import annotations

import json

from django.db import IntegrityError, transaction
from django.utils import timezone

from registry import errors, translog
from registry.models import Countersignature, Owner, Report
from registry.reporting import rfc3339, statement_of, store_document
from verifier.evidence.errors import EvidenceError
from verifier.evidence.owners import countersignature_entry, verify_countersignature


def countersign(report: Report, owner: Owner, sig: str) -> Countersignature:
    """Verify `owner`'s signature `sig` (base64) over the report envelope, log it and store it.

    Raises:
        NotAReportOwner: the owner is not listed in the report.
        BadCountersignature: the signature does not verify with the owner's key.
        AlreadyCountersigned: this owner already countersigned this report.
    """
    listed = {o["keyid"] for o in statement_of(report)["predicate"]["owners"]}
    if owner.keyid not in listed:
        raise errors.NotAReportOwner()
    envelope = json.loads(report.envelope)
    try:
        verify_countersignature(envelope, bytes(owner.public_key), sig)
    except EvidenceError as e:
        raise errors.BadCountersignature(f"{errors.BadCountersignature.default_detail} ({e})") \
            from None
    if report.countersignatures.filter(owner=owner).exists():
        raise errors.AlreadyCountersigned()
    signed_at = rfc3339(timezone.now()) or ""
    try:
        with transaction.atomic():
            row = Countersignature.objects.create(report=report, owner=owner, sig=sig)
            entry = translog.append("countersignature", countersignature_entry(
                envelope, owner.keyid, sig, signed_at))
            row.log_index = entry.index
            row.save(update_fields=["log_index"])
    except IntegrityError:  # the same owner, concurrently
        raise errors.AlreadyCountersigned() from None
    store_document(report)  # the served document now carries this countersignature
    return row
