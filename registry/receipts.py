"""Signed receipts: the registry's word that an entry was logged, with its inclusion proof."""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from registry import witnessing
from registry.identities import registry_identity
from registry.models import LogEntry
from verifier.evidence import dsse
from verifier.evidence.canonical import canonical_json
from verifier.evidence.identity import b64

RECEIPT_PAYLOAD_TYPE = "application/vnd.hallmark.receipt+json"


def receipt(entry: LogEntry) -> dict[str, Any]:
    """{format, envelope (DSSE by the registry over the entry + its time), log, public_keys}."""
    ident = registry_identity()
    payload = canonical_json({
        "type": "hallmark/receipt/v1",
        "log_index": entry.index,
        "integrated_time": entry.created_at.isoformat().replace("+00:00", "Z"),
        "entry": json.loads(bytes(entry.body)),
    })
    snap = witnessing.snapshot(covering=entry.index + 1)
    return {
        "format": "hallmark/receipt/v1",
        "envelope": dsse.sign_envelope(payload, RECEIPT_PAYLOAD_TYPE, [ident]),
        "log": {"index": entry.index, "bundle": snap.bundle(entry.index),
                "origin": settings.HALLMARK_LOG_ORIGIN},
        "public_keys": {"registry": {"keyid": ident.keyid, "ed25519": b64(ident.public_key)}},
    }

