"""in-toto Statement v1: the attestation layer inside a DSSE envelope.

A Statement is `{"_type": "https://in-toto.io/Statement/v1", "subject": [ResourceDescriptor],
"predicateType": URI, "predicate": object}`; a subject is matched by its digest only.
"""
from __future__ import annotations

import re
from typing import Any

from verifier.evidence.canonical import loads_strict
from verifier.evidence.errors import EvidenceError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")


def statement(subject_name: str, sha256_hex: str, predicate_type: str,
              predicate: dict[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 about one subject.

    Args:
        subject_name: a human name for the subject (e.g. the suspect's URL or file name).
        sha256_hex: the subject's SHA-256, 64 lower-case hex characters.
        predicate_type: URI of the predicate's schema.
        predicate: the predicate object.

    Returns:
        The Statement as a dict (sign `canonical_json` of it).

    Example:
        >>> s = statement("model.onnx", "ab" * 32, "https://example.com/p/v1", {})
        >>> s["_type"], s["subject"][0]["digest"]["sha256"][:4]
        ('https://in-toto.io/Statement/v1', 'abab')
    """
    if not isinstance(sha256_hex, str) or not _HEX64.fullmatch(sha256_hex):
        raise EvidenceError(f"subject digest must be 64 lower-case hex characters (SHA-256), "
                            f"received {sha256_hex!r}")
    if not isinstance(subject_name, str) or not subject_name:
        raise EvidenceError("subject name must be a non-empty string")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise EvidenceError("predicateType must be a non-empty URI string")
    if not isinstance(predicate, dict):
        raise EvidenceError(f"predicate must be an object, received {type(predicate).__name__}")
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": subject_name, "digest": {"sha256": sha256_hex}}],
            "predicateType": predicate_type, "predicate": predicate}


def parse_statement(payload: bytes) -> dict[str, Any]:
    """Parse and structurally check an in-toto Statement v1.

    Checks: JSON object without duplicate keys; `_type` is Statement v1; `subject` is a
    non-empty list of objects, each with a non-empty `digest` map of algorithm -> lower-case
    hex (and a string `name` when present); `predicateType` is a non-empty string; `predicate`,
    when present, is an object. Unknown fields are allowed, as the spec says.

    Raises:
        EvidenceError: "malformed statement: …" naming the field.

    Example:
        >>> from verifier.evidence.canonical import canonical_json
        >>> parse_statement(canonical_json(statement("m", "00" * 32, "urn:x", {})))["predicateType"]
        'urn:x'
    """
    def bad(why: str) -> EvidenceError:
        return EvidenceError(f"malformed statement: {why}")

    try:
        doc = loads_strict(payload, "statement")
    except EvidenceError as e:
        raise bad(str(e)) from None
    if not isinstance(doc, dict):
        raise bad(f"expected a JSON object, received {type(doc).__name__}")
    if doc.get("_type") != STATEMENT_TYPE:
        raise bad(f"_type must be {STATEMENT_TYPE!r}, received {doc.get('_type')!r}")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise bad("subject must be a non-empty list")
    for n, s in enumerate(subjects):
        if not isinstance(s, dict):
            raise bad(f"subject[{n}] must be an object")
        if "name" in s and not isinstance(s["name"], str):
            raise bad(f"subject[{n}].name must be a string")
        digest = s.get("digest")
        if not isinstance(digest, dict) or not digest:
            raise bad(f"subject[{n}].digest must be a non-empty object of algorithm: hex")
        for alg, value in digest.items():
            if not isinstance(value, str) or not _HEX.fullmatch(value):
                raise bad(f"subject[{n}].digest.{alg} must be lower-case hex, received {value!r}")
        if "sha256" in digest and not _HEX64.fullmatch(digest["sha256"]):
            raise bad(f"subject[{n}].digest.sha256 must be 64 hex characters")
    if not isinstance(doc.get("predicateType"), str) or not doc["predicateType"]:
        raise bad("predicateType must be a non-empty string")
    if "predicate" in doc and not isinstance(doc["predicate"], dict):
        raise bad("predicate must be an object")
    return doc
