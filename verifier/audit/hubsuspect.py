"""Offline re-check of a Hub suspect's evidence against a local copy of the repo.

A report about a Hugging Face Hub repo binds `suspect.hub.evidence` (header digests, per-tensor
digests of the byte ranges read, whole-file digests) through its subject digest
(`verifier.models.ranged.subject_digest`). Given the repo folder at the reported commit (e.g.
`huggingface-cli download org/name --revision <commit> --local-dir DIR`), `check_hub_digest`
recomputes the subject from the evidence, then re-reads every listed header, byte range and
file from the folder and compares each digest; `hub_suspect` opens the folder the way the
workers saw it (the listed safetensors files by range, or the folder's model) for recomputing
the statistics.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verifier.evidence.errors import EvidenceError
from verifier.models.ranged import (
    RangedTensors,
    local_reader,
    read_header,
    recheck,
    subject_digest,
)
from verifier.suspect import Suspect


def check_hub_digest(hub: Mapping[str, Any], subject_sha256: str, folder: str) -> str:
    """Check that the evidence gives the signed subject and that the local copy matches it.

    Raises:
        EvidenceError: naming the first digest that differs.
    """
    evidence = hub["evidence"]
    recomputed = subject_digest(evidence)
    if recomputed != subject_sha256:
        raise EvidenceError(f"the report's Hub evidence gives subject {recomputed[:16]}…, but the "
                            f"signed subject is {subject_sha256[:16]}…")
    problems = recheck(evidence, local_reader(folder))
    if problems:
        raise EvidenceError(f"the local copy of {hub['repo']}@{hub['commit'][:12]} differs: "
                            + "; ".join(problems[:5]))
    n = len(evidence.get("tensors", {}))
    return (f"sha256:{subject_sha256[:16]}… matches: {len(evidence.get('headers', {}))} "
            f"header(s), {n} tensor range(s) and {len(evidence.get('files', {}))} whole file(s) "
            f"of {hub['repo']}@{hub['commit'][:12]} re-read from {folder}")


def hub_suspect(hub: Mapping[str, Any], folder: str) -> Suspect:
    """The suspect as the workers saw it: range-read safetensors, or the folder's model."""
    headers = hub["evidence"].get("headers", {})
    if not headers:
        from verifier.models import load_suspect

        return load_suspect(folder).suspect
    read = local_reader(folder)
    return Suspect.from_weights(RangedTensors(
        [read_header(f, int(h["size"]), read) for f, h in sorted(headers.items())], read))
