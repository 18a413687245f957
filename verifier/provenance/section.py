"""The report's provenance section: what the suspect declares about itself, beside the verdict.

Shape (`check_provenance` returns it; the registry signs it in the report's predicate as
"provenance"):

    {"label": LABEL, "affects_verdict": false,
     "model_signing": PublisherCheck.to_dict(),       # verifier.provenance.publisher
     "graph_signature": {...}}                         # verifier.provenance.graph

Rules: the section never changes the verdict (`affects_verdict` is always false and the
verdict is computed from the watermark checks alone); every part is labelled "declared
provenance: removable by re-export", because anyone can strip a signature, so an absent or
invalid one proves nothing about ownership.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from verifier.graphsig import LABEL
from verifier.models import LoadLimits, model_files
from verifier.provenance.graph import OwnerKey, check_suspect_graph
from verifier.provenance.publisher import CandidateKey, PublisherCheck, check_publisher, shipped_key


def absent(reason: str) -> dict[str, Any]:
    """The section for a suspect with no files to look at (e.g. an inference endpoint)."""
    return {"label": LABEL, "affects_verdict": False,
            "model_signing": PublisherCheck("absent", reason).to_dict(),
            "graph_signature": {"status": "absent", "reason": reason}}


def check_provenance(path: str | os.PathLike[str], *, owner_key: OwnerKey | None = None,
                     publisher_keys: Sequence[CandidateKey] = (),
                     limits: LoadLimits = LoadLimits(),  # noqa: B008 - frozen, shared safely
                     scratch_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The provenance section of a suspect file, folder or archive.

    Args:
        path: the suspect as fetched.
        owner_key: looks up a registered owner's Ed25519 key by keyid (pins graph signatures).
        publisher_keys: model-signing keys to try besides the shipped `model.pub.pem`.
        limits, scratch_dir: as for `verifier.models.load_suspect`.

    Returns:
        The section (module docstring). Signature problems are statuses, never exceptions.

    Raises:
        ModelFormatError: the folder or archive is refused (as `load_suspect` refuses it).

    Example:
        >>> check_provenance("signed.zip")["model_signing"]["status"]  # doctest: +SKIP
        'valid'
    """
    with model_files(path, limits, scratch_dir=scratch_dir) as files:
        keys = list(publisher_keys)
        if files.is_dir() and (shipped := shipped_key(files)) is not None:
            keys.append(shipped)
        signing = check_publisher(files, keys).to_dict()
        graph = check_suspect_graph(files, owner_key, limits)
    return {"label": LABEL, "affects_verdict": False, "model_signing": signing,
            "graph_signature": graph}



