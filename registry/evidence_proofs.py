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


ALL_PROOFS_UP_TO = 64  # listed commitments; above (a scan of the registry), attributed ones only


def commitment_proofs(report: Report, snap: Snapshot) -> list[dict[str, Any]]:
    """A proof for each commitment the predicate lists, at its log_index; for a report listing
    more than ALL_PROOFS_UP_TO (a scan), for each commitment a check attributed (the ones its
    priority claims rest on), so a scan's report stays small."""
    pred = _predicate(report)
    cited = [c for c in pred["commitments"] if c["log_index"] < snap.size]
    if len(cited) > ALL_PROOFS_UP_TO:
        hits = {c["commitment"] for c in pred["checks"] if c["decision"] == "attributed"}
        cited = [c for c in cited if c["digest"] in hits]
    bodies = _entries([c["log_index"] for c in cited])
    bundles = snap.bundles([c["log_index"] for c in cited if c["log_index"] in bodies])
    return [commitment_proof_field(c["digest"], bodies[c["log_index"]], bundles[c["log_index"]])
            for c in cited if c["log_index"] in bodies]


def owner_proofs(report: Report, snap: Snapshot) -> list[dict[str, Any]]:
    """A proof for each listed owner whose sign-up was logged (owners from before owner
    entries existed have none)."""
    keyids = [o["keyid"] for o in _predicate(report)["owners"]]
    owners = Owner.objects.filter(keyid__in=keyids, log_index__lt=snap.size).order_by("keyid")
    bodies = _entries([o.log_index for o in owners])
    bundles = snap.bundles(list(bodies))
    return [owner_proof_field(o.keyid, json.loads(o.statement), bodies[o.log_index],
                              bundles[o.log_index])
            for o in owners if o.log_index in bodies]


def countersignatures(report: Report, snap: Snapshot) -> list[dict[str, Any]]:
    """Each logged countersignature of the report, with its entry and proof."""
    rows = (report.countersignatures.select_related("owner")
            .filter(log_index__lt=snap.size).order_by("log_index"))
    bodies = _entries([c.log_index for c in rows])
    bundles = snap.bundles(list(bodies))
    out = []
    for c in rows:
        entry = json.loads(bodies[c.log_index])
        out.append(countersignature_field(c.owner.keyid, c.sig, entry["signed_at"],
                                          bodies[c.log_index], bundles[c.log_index]))
    return out
