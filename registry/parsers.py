"""Request parsers: DRF's JSON parser with a size cap and a nesting limit.

Deep JSON (`[[[[…]]]]` thousands of levels) makes `json.loads` raise RecursionError, which DRF
does not expect: it became a 500. Here the nesting is measured before parsing, and every
failure is a ParseError (400) naming the problem.
"""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from registry.errors import PayloadTooLarge

MAX_JSON_DEPTH = 32  # nesting levels of objects and arrays in a JSON body


def _depth_ok(text: str, limit: int) -> bool:
    """True when brackets nest at most `limit` deep (strings skipped), checked before parsing."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with a size cap and a nesting limit; every failure is a ParseError."""

    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: dict[str, Any] | None = None) -> Any:
        raw = stream.read(settings.HALLMARK_MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > settings.HALLMARK_MAX_BODY_BYTES:
            raise PayloadTooLarge(f"JSON bodies are capped at {settings.HALLMARK_MAX_BODY_BYTES} "
                                  "bytes (HALLMARK_MAX_BODY_BYTES)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseError(f"the JSON body is not UTF-8 ({e.reason} at byte {e.start})") from None
        if not _depth_ok(text, MAX_JSON_DEPTH):
            raise ParseError(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels; "
                             "send a flat object") from None
        try:
            return json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            raise ParseError(f"the body is not valid JSON: {e}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


