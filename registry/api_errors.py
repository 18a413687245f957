"""One error shape for every API error: RFC 9457 problem details, with a stable `code`.

Every error body, whatever raised it (a DRF exception, a typed registry error, a throttle,
the request-size middleware, the login lockout), is

    {"type": "https://hallmark.dev/problems/<code>", "title": <HTTP reason>, "status": <int>,
     "detail": <one sentence naming the problem and the fix>, "code": <machine-readable>,
     "errors": {<field>: [<message>, ...]}}      # "errors" only for invalid fields

served as `application/problem+json`, so a client handles one shape.
"""
from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.http import JsonResponse
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

PROBLEM_TYPE = "https://hallmark.dev/problems/"
CONTENT_TYPE = "application/problem+json"


def problem_body(status: int, code: str, detail: str,
                 errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The problem-details document for one error."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE + code, "title": HTTPStatus(status).phrase,
                            "status": status, "detail": detail, "code": code}
    if errors:
        body["errors"] = errors
    return body


def problem_response(status: int, code: str, detail: str) -> JsonResponse:
    """A problem-details response for code outside DRF views (middleware, lockout)."""
    return JsonResponse(problem_body(status, code, detail), status=status,
                        content_type=CONTENT_TYPE)


def _field_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Flatten DRF's nested validation detail into {"field.sub": [messages]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for k, v in detail.items():
            out.update(_field_errors(v, f"{prefix}{k}." if k != "non_field_errors" else prefix))
        return out
    if isinstance(detail, list) and all(not isinstance(d, dict | list) for d in detail):
        return {prefix.rstrip(".") or "request": [str(d) for d in detail]}
    if isinstance(detail, list):
        out = {}
        for i, v in enumerate(detail):
            out.update(_field_errors(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip(".") or "request": [str(detail)]}


def code_of(exc: APIException) -> str:
    """The machine-readable code of a DRF exception (the first one, for nested details)."""
    codes = exc.get_codes()
    while isinstance(codes, dict | list) and codes:
        codes = next(iter(codes.values())) if isinstance(codes, dict) else codes[0]
    return codes if isinstance(codes, str) else exc.default_code


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_handler(exc, context)
    if response is None:
        return None  # not an API error: Django answers 500 and django.request logs it
    if isinstance(exc, ValidationError):
        errors = _field_errors(exc.detail)
        detail = "; ".join(m[0] if f in ("request", "detail") else f"{f}: {m[0]}"
                           for f, m in errors.items())
        body = problem_body(response.status_code, "invalid", detail, errors)
    elif isinstance(exc, APIException):
        body = problem_body(response.status_code, code_of(exc), str(exc.detail))
    else:  # Http404 / PermissionDenied, translated by DRF
        code = "not_found" if response.status_code == 404 else "permission_denied"
        body = problem_body(response.status_code, code, str(response.data.get("detail", "")))
    response.data = body
    response.content_type = CONTENT_TYPE
    return response
