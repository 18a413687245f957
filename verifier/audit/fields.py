"""Field checks shared by the audit's steps: types, counts, log10 p values, RFC 3339 times."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from verifier.evidence.errors import EvidenceError
from verifier.evidence.report import RAN as RAN  # decisions of checks that ran (Holm counts them)

TOP_LEVEL = {"format", "envelope", "log", "public_keys", "consistency", "commitment_proofs",
             "owner_proofs", "countersignatures"}
HEX64 = re.compile(r"[0-9a-f]{64}")
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")


def is_count(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def require(obj: object, where: str, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Each field present with the given type (bool is never accepted as a number)."""
    if not isinstance(obj, dict):
        raise EvidenceError(f"{where} must be an object")
    for name, kind in fields.items():
        if name not in obj:
            raise EvidenceError(f"{where}.{name} is missing")
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise EvidenceError(f"{where}.{name} has the wrong type ({type(value).__name__})")


def optional(obj: Mapping[str, Any], where: str,
             fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Fields that may be absent or null, but have the given type when present."""
    for name, kind in fields.items():
        value = obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise EvidenceError(f"{where}.{name} has the wrong type ({type(value).__name__})")


def has_first_seen(pred: Mapping[str, Any]) -> bool:
    """Does the predicate state when the suspect was first seen (suspect.first_seen)?"""
    return isinstance(pred.get("suspect"), dict) and "first_seen" in pred["suspect"]


def parse_log10(value: object, where: str) -> float:
    if value == "-inf":
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value > 0:
        raise EvidenceError(f"{where} must be a number <= 0 or \"-inf\", received {value!r}")
    return float(value)


def parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str) or not _RFC3339_UTC.fullmatch(value):
        raise EvidenceError(f"{where} must be an RFC 3339 UTC time like 2026-01-02T03:04:05Z, "
                            f"received {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise EvidenceError(f"{where} is not a valid date and time: {value!r}") from None
