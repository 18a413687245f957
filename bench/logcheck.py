"""Is the transparency log consistent after the chaos? Checked independently of the registry's
own code paths: entries are read straight from PostgreSQL, the root is recomputed from their
bytes with `verifier.evidence.merkle.root` (the reference definition, not the stored nodes), and
compared with the signed checkpoint the API serves; every report must be logged under its own
envelope's entry, inside that checkpoint, with an inclusion proof (from the API) that verifies.
A sample of whole report documents also passes `verifier.audit` (what `hallmark audit` runs).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import psycopg

from verifier import audit
from verifier.evidence import identity, logentry, merkle, note

_RETRIED: list[str] = []  # 5xx answers retried (a web process's first request after a restart)


def _get(url: str) -> bytes:
    for attempt in range(4):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt == 3:
                raise
            _RETRIED.append(f"{e.code} {url.split('/api/', 1)[-1][:40]}")
            time.sleep(1.0)
    raise AssertionError("unreachable")


def check(conn: psycopg.Connection, base_url: str, registry_key: bytes,
          origin: str = "hallmark.localhost/log", audit_sample: int = 5) -> dict[str, Any]:
    """Every report in the final checkpoint, root recomputed, inclusion proofs verified.

    Returns:
        {"ok", "checkpoint_size", "entries", "root_matches", "reports", "reports_in_checkpoint",
         "report_entries_match", "inclusion_proofs_verified", "audited", "audits_ok", "problems"}.
    """
    problems: list[str] = []
    _RETRIED.clear()
    cp = note.verify_checkpoint(_get(f"{base_url}/api/log/checkpoint").decode(), origin, registry_key)
    rows = conn.execute('SELECT "index", body FROM registry_logentry WHERE "index" < %s '
                        'ORDER BY "index"', [cp.size]).fetchall()
    indexes = [i for i, _ in rows]
    if indexes != list(range(cp.size)):
        problems.append(f"log indexes are not 0..{cp.size - 1} without gaps or repeats")
    leaves = [merkle.leaf_hash(bytes(body)) for _, body in rows]
    root_ok = merkle.root(leaves) == cp.root
    if not root_ok:
        problems.append("the root recomputed from the entries differs from the signed checkpoint")
    reports = conn.execute("SELECT public_id, envelope, log_index FROM registry_report "
                           "ORDER BY log_index").fetchall()
    inside = entries_ok = proofs_ok = 0
    for public_id, envelope, index in reports:
        if index is None or index >= cp.size:
            problems.append(f"report {public_id} (log index {index}) is not in the checkpoint")
            continue
        inside += 1
        entry = logentry.report_entry(json.loads(envelope))
        if index < len(rows) and bytes(rows[index][1]) == entry:
            entries_ok += 1
        else:
            problems.append(f"log entry {index} is not report {public_id}'s envelope")
        proof = json.loads(_get(f"{base_url}/api/log/inclusion?index={index}&size={cp.size}"))
        hashes = [identity.unb64(h) for h in proof["hashes"]]
        if merkle.verify_inclusion(merkle.leaf_hash(entry), index, cp.size, hashes, cp.root):
            proofs_ok += 1
        else:
            problems.append(f"the inclusion proof of report {public_id} does not verify")
    audits_ok = 0
    sample = reports[:: max(1, len(reports) // audit_sample)][:audit_sample] if reports else []
    for public_id, _, _ in sample:
        result = audit.audit(_get(f"{base_url}/api/reports/{public_id}"), registry_key=registry_key)
        audits_ok += result.ok
        if not result.ok:
            problems.append(f"report {public_id} fails its audit: {result.failure}")
    return {"ok": not problems, "checkpoint_size": cp.size, "entries": len(rows),
            "root_matches": root_ok, "reports": len(reports), "reports_in_checkpoint": inside,
            "report_entries_match": entries_ok, "inclusion_proofs_verified": proofs_ok,
            "audited": len(sample), "audits_ok": audits_ok, "problems": problems[:20],
            "http_5xx_retried": list(_RETRIED)}
