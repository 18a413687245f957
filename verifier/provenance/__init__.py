"""Declared provenance of a suspect: signatures it carries, checked beside the watermarks.

A suspect may declare who published it: an OpenSSF model-signing bundle (`model.sig`, with the
publisher's key `model.pub.pem`) beside the model files of a folder or archive, or a LEIP-style
graph signature in an ONNX model's `metadata_props` (`verifier.graphsig`). The registry checks
both on every suspect it fetches and signs the outcome in the report, beside the verdict and
never folded into it: a signature is removable by re-export, so its absence proves nothing,
and only watermarks say where the weights came from.

Modules, each importing only those above it: `publisher` (model-signing bundles, by key),
`graph` (graph signatures, pinned to registered owners), `section` (the report's section).

Example:
    >>> from verifier.provenance import check_provenance  # doctest: +SKIP
    >>> section = check_provenance("suspect.zip", owner_key=lambda keyid: None)  # doctest: +SKIP
    >>> section["model_signing"]["status"], section["graph_signature"]["status"]  # doctest: +SKIP
    ('valid', 'absent')
"""
from verifier.provenance.graph import check_suspect_graph
from verifier.provenance.publisher import (
    PUBLIC_KEY,
    SIGNATURE,
    CandidateKey,
    PublisherCheck,
    check_publisher,
    key_sha256,
)
from verifier.provenance.section import LABEL, absent, check_provenance

__all__ = ["LABEL", "PUBLIC_KEY", "SIGNATURE", "CandidateKey", "PublisherCheck", "absent",
           "check_provenance", "check_publisher", "check_suspect_graph", "key_sha256"]
