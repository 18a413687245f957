"""Limits on what one request may cost: body size, JSON shape, a request id, the lockout answer.

Rules encoded here:
- Every request gets an id (`X-Request-ID`: the client's, if it is 1–64 characters of
  [A-Za-z0-9._-], else a fresh one); log lines written while serving it carry it, and so does
  every 500 logged by `django.request`, so an operator can find the traceback of a user's 500.
- A body larger than its cap is refused from its Content-Length with 413, before it is read:
  multipart uploads up to HALLMARK_MAX_UPLOAD_BYTES (plus 1 MiB of form overhead), anything
  else up to HALLMARK_MAX_BODY_BYTES.
- An uploaded file is counted while it streams in; past the cap the upload stops
  (`CappedUploadHandler`), so a lying Content-Length cannot make the process hold more.
- JSON bodies are parsed with a size cap and a nesting limit (registry/parsers.py).
"""
from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import APIException

from registry import requestid
from registry.api_errors import code_of, problem_response
from registry.errors import PayloadTooLarge

_FORM_OVERHEAD = 1024 * 1024  # multipart boundaries and small fields beside an upload
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def body_cap(content_type: str) -> int:
    """The largest body a request of this content type may send."""
    if content_type.startswith("multipart/form-data"):
        return settings.HALLMARK_MAX_UPLOAD_BYTES + _FORM_OVERHEAD
    return settings.HALLMARK_MAX_BODY_BYTES


class RequestLimitsMiddleware:
    """Request ids and body caps, before any view or parser reads the body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        rid = given if _CLIENT_ID.fullmatch(given) else secrets.token_hex(8)
        token = requestid.current.set(rid)
        try:
            response = self._limited(request) or self.get_response(request)
        finally:
            requestid.current.reset(token)
        response["X-Request-ID"] = rid
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        """Typed errors raised in web views (an upload past the cap mid-stream, a throttle, the
        rate-limit store down) answer with their status and Retry-After, not a 500."""
        if not isinstance(exc, APIException):
            return None
        response = problem_response(exc.status_code, code_of(exc), str(exc.detail))
        wait = getattr(exc, "wait", None)
        if wait is not None:
            response["Retry-After"] = str(max(1, math.ceil(wait)))
        return response

    @staticmethod
    def _limited(request: HttpRequest) -> HttpResponse | None:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return problem_response(400, "bad_content_length",
                            f"Content-Length {raw[:40]!r} is not a whole number of bytes")
        if length < 0:
            return problem_response(400, "bad_content_length", "Content-Length must not be negative")
        cap = body_cap(request.META.get("CONTENT_TYPE", ""))
        if length > cap:
            return problem_response(413, "payload_too_large",
                            f"the request body is {length} bytes; this registry accepts at most "
                            f"{cap} bytes here (uploads: HALLMARK_MAX_UPLOAD_BYTES)")
        return None


class CappedUploadHandler(FileUploadHandler):
    """Counts each uploaded file's bytes as they arrive and stops the upload past the cap."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self._seen = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self._seen += len(raw_data)
        if self._seen > settings.HALLMARK_MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(
                f"the uploaded file `{self.file_name}` is over the "
                f"{settings.HALLMARK_MAX_UPLOAD_BYTES}-byte cap (HALLMARK_MAX_UPLOAD_BYTES)")
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler (memory or temporary file) builds the file


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """429 with Retry-After for a username/address pair locked out by django-axes."""
    minutes = settings.AXES_COOLOFF_TIME * 60
    response = problem_response(429, "locked_out",
                        f"too many failed logins for this account from this address; try again "
                        f"in {minutes:.0f} minutes or reset your password")
    response["Retry-After"] = str(int(minutes * 60))
    return response
