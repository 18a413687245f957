"""The evidence a report gives for a Hugging Face Hub suspect, and the subject it binds.

For a Hub suspect the report names the repo, the commit sha and every file used, and states
exactly what was verified (docs/evidence.md, "Hub suspects and range reads"):
- `evidence.headers`: per safetensors file, the SHA-256 of its header bytes (pinned at the
  first fetch), the header's length and the file's size;
- `evidence.tensors`: per tensor any check read, the file, byte range and SHA-256 (the union
  over all checks; two checks that read different bytes for one tensor are a conflict);
- `evidence.files`: per file downloaded whole (adapters, ONNX), its SHA-256;
- per file, the Hub's claimed whole-file SHA-256 (its LFS ETag), marked "claimed, not
  verified" unless the file was downloaded whole and matched;
- bytes read of bytes held, and the fraction.
The subject digest is `verifier.models.ranged.subject_digest` over that evidence, so the
signature binds every digest listed; `hallmark audit --suspect <local repo folder>` re-reads
the same ranges of a local copy and recomputes it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from registry.models import HUB, Suspect
from verifier.models import ModelFormatError
from verifier.models.ranged import SUBJECT_DOMAIN, merge_evidence, subject_digest

CLAIMED = "claimed by the Hub (LFS ETag), not verified"
VERIFIED = "verified: downloaded whole and hashed"


def hub_evidence(suspect: Suspect, details: Iterable[Mapping[str, Any] | None]
                 ) -> dict[str, Any] | None:
    """The predicate's `suspect.hub` object for a Hub suspect (None for other suspects).

    Args:
        suspect: the Suspect row (pinned repo, commit, files used).
        details: each check's details; range-read checks carry what they read under "read".

    Returns:
        {"repo", "commit", "files", "evidence", "subject", "subject_sha256", "bytes_read",
         "bytes_total", "fraction_read"} and "conflict" when checks read different bytes.
    """
    if suspect.kind != HUB:
        return None
    base: dict[str, Any] = {"files": {}, "headers": {}, "tensors": {}}
    files = []
    for u in suspect.hub_files:
        if "header_sha256" in u:
            base["headers"][u["name"]] = {"sha256": u["header_sha256"],
                                          "bytes": u["header_bytes"], "size": u["size"]}
        elif "sha256" in u:
            base["files"][u["name"]] = {"sha256": u["sha256"], "size": u["size"]}
        whole = u.get("sha256")
        files.append({"name": u["name"], "size": u["size"],
                      "claimed_sha256": u.get("claimed_sha256", ""),
                      "claim": VERIFIED if whole and whole == u.get("claimed_sha256")
                      else CLAIMED})
    reads = [base] + [{k: d["read"].get(k, {}) for k in ("headers", "tensors")}
                      for d in details if isinstance(d, Mapping) and isinstance(d.get("read"), Mapping)]
    conflict = None
    try:
        evidence = merge_evidence(reads)
    except ModelFormatError as e:  # the server served other bytes to another check
        evidence, conflict = merge_evidence([base]), str(e)
    read = (sum(h["bytes"] for h in evidence["headers"].values())
            + sum(r["end"] - r["begin"] for r in evidence["tensors"].values())
            + sum(f["size"] for f in evidence["files"].values()))
    total = sum(f["size"] for f in files)
    out = {"repo": suspect.hub_repo, "commit": suspect.hub_commit, "files": files,
           "evidence": evidence, "subject": SUBJECT_DOMAIN.decode().strip(),
           "subject_sha256": subject_digest(evidence), "bytes_read": read,
           "bytes_total": total, "fraction_read": read / total if total else 1.0}
    if conflict:
        out["conflict"] = conflict
    return out
