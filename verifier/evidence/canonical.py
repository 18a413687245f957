"""Canonical JSON and SHA-256: the byte encodings that Hallmark signs, hashes and logs.

Rules of `canonical_json` (Hallmark's canonical form):
- object keys sorted by Unicode code point, no insignificant whitespace (`,` and `:` only);
- UTF-8 output; non-ASCII characters are written as themselves, control characters as JSON
  escapes (`\\n`, `\\u001f`), exactly as Python's `json` module writes them;
- integers in decimal; floats in Python's shortest round-trip form (`repr`);
- NaN and ±infinity are refused (JSON has no such numbers; write "-inf" as a string);
- object keys must be strings (Python's json would silently turn `1` into `"1"`, which lets two
  different dicts encode to the same bytes).

This is Hallmark's own canonical form, *not* RFC 8785 (JCS), and it differs from JCS in three
places, all deliberate and stable:
- keys are sorted by Unicode code point; JCS sorts by UTF-16 code unit, so the order differs
  when a key holds a character outside the Basic Multilingual Plane (e.g. "\U0001F600" sorts
  after "\uffff" here, before it in JCS);
- integers are written exactly, however large; JCS writes every number as an IEEE double, so
  integers above 2^53 lose digits there (2^53 + 1 prints as 9007199254740992 in JCS);
- floats use Python's `repr` (`1e-06`, `1e+16`); JCS uses ECMAScript's form (`0.000001`,
  `10000000000000000`).
For documents whose keys lie in the BMP and whose numbers are integers of magnitude at most
2^53 (every envelope, log entry and opening) the bytes equal JCS's. Verifiers in other
languages reproduce this form with these rules, not with a JCS library.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from verifier.evidence.errors import EvidenceError


def canonical_json(obj: Any) -> bytes:
    """Encode a JSON value in Hallmark's canonical form.

    Args:
        obj: dicts with string keys, lists/tuples, strings, ints, finite floats, bools, None.

    Returns:
        The UTF-8 bytes; equal values always give equal bytes.

    Raises:
        EvidenceError: NaN or infinity, a non-string key, or a non-JSON type, naming where.

    Example:
        >>> canonical_json({"b": 1, "a": [True, None, "é"]})
        b'{"a":[true,null,"\\xc3\\xa9"],"b":1}'
    """
    _check(obj, "$")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _check(obj: Any, where: str) -> None:
    """Refuse what canonical JSON cannot hold, naming the path of the offending value."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise EvidenceError(
                f"canonical JSON cannot hold {obj!r} (at {where}); JSON has no NaN or infinity: "
                "encode it as a string such as \"-inf\" (TestResult.to_dict does this)")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise EvidenceError(f"canonical JSON needs string keys; found {type(k).__name__} "
                                    f"key {k!r} at {where}: convert it to a string first")
            _check(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check(v, f"{where}[{i}]")
        return
    raise EvidenceError(f"canonical JSON cannot hold a {type(obj).__name__} (at {where}); "
                        "expected dict, list, str, int, float, bool or None")


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of `data`.

    Example:
        >>> sha256_hex(b"")
        'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    return hashlib.sha256(data).hexdigest()


def loads_strict(data: bytes | str, what: str = "JSON document") -> Any:
    """Parse JSON refusing duplicate object keys and NaN/Infinity literals.

    A duplicate key lets two parsers see two different documents in the same bytes, so evidence
    parsing never accepts one.

    Raises:
        EvidenceError: invalid UTF-8 or JSON, a duplicate key, or a non-finite number.
    """
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise EvidenceError(f"{what} has the key {k!r} twice; a JSON object may hold "
                                    "each key once")
            out[k] = v
        return out

    def no_constant(name: str) -> Any:
        raise EvidenceError(f"{what} holds the non-JSON number {name}")

    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=pairs, parse_constant=no_constant)
    except UnicodeDecodeError as e:
        raise EvidenceError(f"{what} is not valid UTF-8 ({e})") from None
    except json.JSONDecodeError as e:
        raise EvidenceError(f"{what} is not valid JSON: {e}") from None
