"""Hostile clients meet limits: throttles, lockout, body caps, name rules, no escrow oracle."""
from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework import status
from rest_framework.test import APIClient

from registry.models import Commitment, RegisteredModel, Verification
from tests.keys import uchida_key_blob
from tests.registry.conftest import make_actor

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


@pytest.fixture
def rates(settings):  # type: ignore[no-untyped-def]
    """Small rates so a test can reach each limit in a few requests."""
    def set_rates(**scopes: str) -> None:
        rf = dict(settings.REST_FRAMEWORK)
        rf["DEFAULT_THROTTLE_RATES"] = {**rf["DEFAULT_THROTTLE_RATES"], **scopes}
        settings.REST_FRAMEWORK = rf
    return set_rates


def _throttled(r) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status.HTTP_429_TOO_MANY_REQUESTS, r.content
    assert int(r["Retry-After"]) >= 1
    assert set(r.json()) >= PROBLEM_KEYS and r.json()["status"] == 429


def _signup(client: APIClient, name: str):  # type: ignore[no-untyped-def]
    return client.post("/api/signup", {"username": name, "password": "long enough pw"},
                       format="json")


def _upload(actor, model_id: str, blob: bytes):  # type: ignore[no-untyped-def]
    f = io.BytesIO(blob)
    f.name = "key.safetensors"
    return actor.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")


def _model(actor, name: str = "digits") -> str:  # type: ignore[no-untyped-def]
    r = actor.api.post("/api/models/", {"name": name}, format="json")
    assert r.status_code == 201, r.json()
    return r.json()["id"]


# --------------------------------------------------------------------------- throttles

def test_anonymous_signups_are_throttled_per_address(db, rates):
    rates(signup="2/hour")
    client = APIClient()
    assert _signup(client, "a1").status_code == 201
    assert _signup(client, "a2").status_code == 201
    _throttled(_signup(client, "a3"))
    assert not User.objects.filter(username="a3").exists()
    other = APIClient(REMOTE_ADDR="127.0.0.9")
    assert _signup(other, "a4").status_code == 201  # another address has its own budget


def test_web_signups_share_the_signup_limit(db, rates):
    rates(signup="1/hour")
    web = Client()
    form = {"username": "w1", "password1": "long enough pw 1", "password2": "long enough pw 1"}
    assert web.post("/signup/", form).status_code == 302
    _throttled(Client().post("/signup/", {**form, "username": "w2"}))
    assert not User.objects.filter(username="w2").exists()


def test_token_requests_are_throttled_per_address(alice, rates):
    rates(login="3/min")
    client = APIClient()
    for _ in range(3):
        assert client.post("/api/token", {"username": "alice", "password": "correct horse battery"},
                           format="json").status_code == 200
    _throttled(client.post("/api/token", {"username": "alice",
                                          "password": "correct horse battery"}, format="json"))


def test_repeated_wrong_passwords_lock_the_token_endpoint_out(alice, settings):
    client = APIClient()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        r = client.post("/api/token", {"username": "alice", "password": "wrong"}, format="json")
        assert r.status_code == 400 and r.json()["code"] == "invalid"
    r = client.post("/api/token", {"username": "alice", "password": "wrong"}, format="json")
    assert r.status_code == 429 and r.json()["code"] == "locked_out" and "Retry-After" in r
    # locked: even the right password is refused now, from this address
    r = client.post("/api/token", {"username": "alice", "password": "correct horse battery"},
                    format="json")
    assert r.status_code == 429 and r.json()["code"] == "locked_out"
    # the same account from another address, and another account from this one, still work
    assert APIClient(REMOTE_ADDR="127.0.0.7").post(
        "/api/token", {"username": "alice", "password": "correct horse battery"},
        format="json").status_code == 200
    make_actor("bob")
    assert client.post("/api/token", {"username": "bob", "password": "correct horse battery"},
                       format="json").status_code == 200


def test_repeated_wrong_passwords_lock_the_web_login_out(alice, settings):
    web = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        r = web.post("/login/", {"username": "alice", "password": "wrong"})
    assert r.status_code == 429 and "Retry-After" in r
    r = web.post("/login/", {"username": "alice", "password": "correct horse battery"})
    assert r.status_code == 429
    assert "_auth_user_id" not in web.session


def test_a_scan_costs_more_submission_quota_than_a_targeted_check(alice, rates, settings,
                                                                  django_capture_on_commit_callbacks):
    rates(submit="12/hour")
    settings.HALLMARK_SCAN_COST = 10
    target = _model(alice)
    with django_capture_on_commit_callbacks(execute=False):
        assert alice.api.post("/api/verifications/", {"url": "https://a.example.org/m.onnx"},
                              format="json").status_code == 202  # a scan: 10 of 12
        for _ in range(2):
            assert alice.api.post("/api/verifications/", {
                "url": "https://b.example.org/m.onnx", "target": target},
                format="json").status_code == 202  # targeted: 1 each
        _throttled(alice.api.post("/api/verifications/", {"url": "https://c.example.org/m.onnx"},
                                  format="json"))
    assert Verification.objects.count() == 3


def test_submissions_are_throttled_per_suspect_host_across_accounts(alice, outsider, rates,
                                                                    django_capture_on_commit_callbacks):
    rates(suspect_host="2/min")
    url = "https://victim.example.org/m.onnx"
    with django_capture_on_commit_callbacks(execute=False):
        assert alice.api.post("/api/verifications/", {"url": url}, format="json").status_code == 202
        assert outsider.api.post("/api/verifications/", {"url": url}, format="json").status_code == 202
        _throttled(alice.api.post("/api/verifications/", {"url": url + "?again"}, format="json"))
        assert alice.api.post("/api/verifications/", {"url": "https://other.example.org/x.onnx"},
                              format="json").status_code == 202


def test_key_uploads_are_throttled_per_account(alice, rates):
    rates(upload="1/hour")
    model_id = _model(alice)
    assert _upload(alice, model_id, uchida_key_blob(1)).status_code == 201
    _throttled(_upload(alice, model_id, uchida_key_blob(2)))
    assert Commitment.objects.count() == 1


# --------------------------------------------------------------------------- body caps

def test_a_body_over_the_cap_is_refused_from_its_content_length_unread(alice):
    r = alice.api.generic("POST", "/api/models/", b'{"name": "x"}', "application/json",
                          CONTENT_LENGTH=str(10 * 1024 * 1024))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert RegisteredModel.objects.count() == 0


def test_an_upload_over_the_cap_stops_streaming_and_stores_nothing(alice, settings):
    model_id = _model(alice)
    settings.HALLMARK_MAX_UPLOAD_BYTES = 64 * 1024
    # 16× the cap, yet inside the multipart overhead the Content-Length check allows: only
    # the upload handler, counting bytes as they stream in, can stop it.
    r = _upload(alice, model_id, b"\0" * (1024 * 1024))
    assert r.status_code == 413 and "HALLMARK_MAX_UPLOAD_BYTES" in r.json()["detail"]
    assert Commitment.objects.count() == 0


def test_a_long_description_is_refused(alice):
    r = alice.api.post("/api/models/", {"name": "m", "description": "x" * 10_001}, format="json")
    assert r.status_code == 400 and "10000" in r.json()["errors"]["description"][0]


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("name", ["evil\u202egnp.exe", "ansi\x1b[31mred", "tab\tname",
                                  "zero\u200bwidth", "line\nbreak", "bell\x07"])
def test_model_names_must_be_printable_on_the_api(alice, name):
    r = alice.api.post("/api/models/", {"name": name}, format="json")
    assert r.status_code == 400 and "name" in r.json()["errors"], r.json()
    assert RegisteredModel.objects.count() == 0


def test_model_names_must_be_printable_on_the_web_form(alice):
    web = Client()
    web.force_login(alice.user)
    r = web.post("/models/new/", {"name": "evil\u202egnp", "version": "1"})
    assert r.status_code == 200 and "U+202E" in r.content.decode()
    assert RegisteredModel.objects.count() == 0


def test_usernames_are_unique_without_regard_to_case_on_api_and_web(alice):
    r = _signup(APIClient(), "ALICE")
    assert r.status_code == 400 and "taken" in r.json()["errors"]["username"][0]
    form = {"username": "Alice", "password1": "long enough pw 1", "password2": "long enough pw 1"}
    assert "taken" in Client().post("/signup/", form).content.decode()
    assert User.objects.filter(username__iexact="alice").count() == 1


def test_the_api_refuses_usernames_the_web_form_refuses(db):
    r = _signup(APIClient(), "bad name\u202e")
    assert r.status_code == 400 and "username" in r.json()["errors"]


# --------------------------------------------------------------------------- escrow oracle

def test_committing_a_key_another_account_holds_reveals_nothing(alice, outsider):
    blob = uchida_key_blob(3)
    assert _upload(alice, _model(alice), blob).status_code == 201
    r = _upload(outsider, _model(outsider), blob)
    # the same answer as for a fresh key: no way to learn what sits in escrow
    assert r.status_code == 201
    assert _upload(outsider, _model(outsider, "again"), blob).status_code == 409  # own duplicate


# --------------------------------------------------------------------------- request ids

def test_every_response_carries_a_request_id(db):
    r = APIClient().get("/api/log/checkpoint")
    assert len(r["X-Request-ID"]) == 16
    r = APIClient().get("/api/log/checkpoint", HTTP_X_REQUEST_ID="trace-42")
    assert r["X-Request-ID"] == "trace-42"
    r = APIClient().get("/api/log/checkpoint", HTTP_X_REQUEST_ID="bad id\r\nSet-Cookie: x")
    assert r["X-Request-ID"] != "bad id\r\nSet-Cookie: x" and len(r["X-Request-ID"]) == 16


def test_server_errors_are_logged_with_the_request_id_in_production_too(settings):
    import logging.config

    from registry import requestid

    config = settings.LOGGING
    handler = config["loggers"]["django.request"]["handlers"][0]
    assert config["loggers"]["django.request"]["level"] == "ERROR"
    assert "request_id" in config["handlers"][handler]["filters"]
    assert "%(request_id)s" in config["formatters"][config["handlers"][handler]["formatter"]]["format"]
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "boom", None, None)
    token = requestid.current.set("abc123")
    try:
        assert requestid.RequestIdFilter().filter(record) and record.request_id == "abc123"
    finally:
        requestid.current.reset(token)
    logging.config.dictConfig(config)  # the configuration loads as written


def test_a_rate_limit_store_that_is_down_answers_503_and_stores_nothing(alice, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:9/0"}}  # a closed loopback port
    r = alice.api.post("/api/verifications/", {"url": "https://a.example.org/m.onnx"},
                       format="json")
    assert r.status_code == 503 and r.json()["code"] == "limiter_unavailable"
    assert int(r["Retry-After"]) >= 1
    assert Verification.objects.count() == 0
