"""Django's error handlers: problem details under /api/, a plain page elsewhere.

Errors raised outside DRF views (a disallowed Host header, too many multipart files, an
unknown URL, an unexpected exception) reach these handlers; API clients still get the one
error shape of registry/api_errors.py, with the request id to quote.
"""
from __future__ import annotations

from http import HTTPStatus

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from registry import requestid
from registry.api_errors import problem_response

_DETAILS = {
    400: ("bad_request", "the request is malformed (headers, body or form encoding); check it "
                         "against the API documentation"),
    403: ("permission_denied", "you may not do this; log in with an account that may"),
    404: ("not_found", "nothing lives at this address; check the URL"),
    500: ("server_error", "the registry failed to answer; quote the request id to its operator"),
}


def _answer(request: HttpRequest, status: int) -> HttpResponse:
    code, detail = _DETAILS[status]
    rid = requestid.current.get()
    if status == 500:
        detail = f"{detail} (request id {rid})"
    if request.path.startswith("/api/"):
        return problem_response(status, code, detail)
    return render(request, "registry/error.html", {
        "status": status, "title": HTTPStatus(status).phrase, "detail": detail,
        "request_id": rid}, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _answer(request, 400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _answer(request, 403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _answer(request, 404)


def server_error(request: HttpRequest) -> HttpResponse:
    return _answer(request, 500)
