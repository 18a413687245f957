"""Base64 as every Hallmark document writes and reads it (RFC 4648 §4 and §5).

The lowest module of `verifier.evidence` besides `errors`: notes, vkeys, identities and
reports all import it, and it imports nothing of theirs.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from verifier.evidence.errors import EvidenceError

_STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL = re.compile(r"[A-Za-z0-9\-_]*={0,2}")


def b64(data: bytes) -> str:
    """Standard, padded base64 (RFC 4648 §4), as every Hallmark document writes it.

    Example:
        >>> b64(b"hallmark")
        'aGFsbG1hcms='
    """
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Decode standard or URL-safe base64 (padding optional), refusing non-canonical input.

    DSSE asks verifiers to accept both alphabets. A string mixing the two alphabets, holding
    other characters, or with non-zero unused bits in its last character (two strings that
    decode to the same bytes) is refused, so a changed character never decodes to equal bytes.

    Raises:
        EvidenceError: not base64, naming what was received.

    Example:
        >>> unb64("aGFsbG1hcms=") == unb64("aGFsbG1hcms") == b"hallmark"
        True
    """
    if not isinstance(text, str):
        raise EvidenceError(f"expected a base64 string, received {type(text).__name__}")
    std, url = _STD.fullmatch(text), _URL.fullmatch(text)
    if not (std or url):
        raise EvidenceError(f"not base64: {short_repr(text)} (expected the standard or URL-safe "
                            "alphabet, one of them only)")
    body = text.rstrip("=")
    if len(text) % 4 and len(text) != len(body):
        raise EvidenceError(f"not base64: {short_repr(text)} has padding but a length that is not a "
                            "multiple of 4")
    if len(body) % 4 == 1:
        raise EvidenceError(f"not base64: {short_repr(text)} has an impossible length")
    padded = body + "=" * (-len(body) % 4)
    try:
        data = (base64.b64decode(padded, validate=True) if std
                else base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError) as e:
        raise EvidenceError(f"not base64: {short_repr(text)} ({e})") from None
    again = (base64.b64encode(data) if std else base64.urlsafe_b64encode(data)).decode("ascii")
    if again.rstrip("=") != body:
        raise EvidenceError(f"not canonical base64: {short_repr(text)} has non-zero unused bits in "
                            "its last character")
    return data


def unb64_strict(text: str, what: str, size: int | None = None) -> bytes:
    """Decode standard, padded, canonical base64 only (the C2SP formats and Hallmark reports).

    Args:
        text: the base64 string.
        what: what the value is, for the error message (e.g. "root hash").
        size: the exact decoded length required, if any.

    Raises:
        EvidenceError: naming `what`, the problem and what was received.
    """
    if not isinstance(text, str) or not _STD.fullmatch(text) or len(text) % 4:
        raise EvidenceError(f"{what} is not standard padded base64: {short_repr(text)}")
    data = unb64(text)
    if b64(data) != text:
        raise EvidenceError(f"{what} is not canonical base64: {short_repr(text)}")
    if size is not None and len(data) != size:
        raise EvidenceError(f"{what} decodes to {len(data)} bytes, expected {size}")
    return data


def short_repr(value: Any, limit: int = 40) -> str:
    """A short printable rendering of a received value, for error messages."""
    s = repr(value)
    return s if len(s) <= limit else s[:limit] + "…"
