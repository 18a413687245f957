"""The log proofs a report carries besides its own: every commitment and owner it cites, and
every countersignature, each against the report's one published checkpoint (a Snapshot)."""
from __future__ import annotations

import base64
import json
from typing import Any

from registry.models import LogEntry, Owner, Report
from registry.witnessing import Snapshot
from verifier.evidence.report import (
    commitment_proof_field,
    countersignature_field,
    owner_proof_field,
)


def _predicate(report: Report) -> dict[str, Any]:
    payload = base64.b64decode(json.loads(report.envelope)["payload"])
    return dict(json.loads(payload)["predicate"])


def _entries(indexes: list[int]) -> dict[int, bytes]:
    rows = LogEntry.objects.filter(index__in=indexes).values_list("index", "body")
    return {int(i): bytes(b) for i, b in rows}


def commitment_proofs(report: Report, snap: Snapshot) -> list[dict[str, Any]]:
    """A proof for each commitment the predicate lists, at its log_index."""
    cited = [c for c in _predicate(report)["commitments"] if c["log_index"] < snap.size]
    bodies = _entries([c["log_index"] for c in cited])
    return [commitment_proof_field(c["digest"], bodies[c["log_index"]],
                                   snap.bundle(c["log_index"]))
            for c in cited if c["log_index"] in bodies]


def owner_proofs(report: Report, snap: Snapshot) -> list[dict[str, Any]]:
    """A proof for each listed owner whose sign-up was logged (owners from before owner
    entries existed have none)."""
    keyids = [o["keyid"] for o in _predicate(report)["owners"]]
    owners = Owner.objects.filter(keyid__in=keyids, log_index__lt=snap.size).order_by("keyid")
    bodies = _entries([o.log_index for o in owners])
    return [owner_proof_field(o.keyid, json.loads(o.statement), bodies[o.log_index],
                              snap.bundle(o.log_index))
            for o in owners if o.log_index in bodies]


def countersignatures(report: Report, snap: Snapshot) -> list[dict[str, Any]]:
    """Each logged countersignature of the report, with its entry and proof."""
    rows = (report.countersignatures.select_related("owner")
            .filter(log_index__lt=snap.size).order_by("log_index"))
    bodies = _entries([c.log_index for c in rows])
    out = []
    for c in rows:
        entry = json.loads(bodies[c.log_index])
        out.append(countersignature_field(c.owner.keyid, c.sig, entry["signed_at"],
                                          bodies[c.log_index], snap.bundle(c.log_index)))
    return out
