"""Hostile requests to the API: every one is answered 4xx in the one error shape, never 5xx,
and leaves no row behind. Each case names what it sends and the status it must get."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from rest_framework.test import APIClient

from registry.models import Commitment, RegisteredModel, Suspect, Verification
from tests.registry.conftest import make_actor

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
UUID0 = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes | None = None
    content_type: str = "application/json"
    status: int = 400
    method: str = "POST"
    anonymous: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


SIGNUP = "/api/signup"
MODELS = "/api/models/"
VERIFY = "/api/verifications/"
UPLOAD = "/api/models/{model}/commitments/"
OK_USER = {"username": "newbie", "password": "long enough pw"}


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


MP = "multipart/form-data; boundary=b0undary"

CASES = [
    # ---- JSON shape and encoding (anonymous sign-up) ----
    Case("deeply nested arrays", SIGNUP, b"[" * 100_000 + b"]" * 100_000, anonymous=True),
    Case("deeply nested objects", SIGNUP, b'{"a":' * 64 + b"1" + b"}" * 64, anonymous=True),
    Case("a JSON array instead of an object", SIGNUP, b"[1, 2, 3]", anonymous=True),
    Case("a bare JSON string", SIGNUP, b'"newbie"', anonymous=True),
    Case("truncated JSON", SIGNUP, b'{"username": "x"', anonymous=True),
    Case("bytes that are not UTF-8", SIGNUP, b'{"username": "\xff\xfe"}', anonymous=True),
    Case("a NaN literal", SIGNUP, b'{"username": NaN, "password": "long enough pw"}', anonymous=True),
    Case("an integer of 5,000 digits", SIGNUP, b'{"username": ' + b"9" * 5000 + b"}", anonymous=True),
    Case("an empty body", SIGNUP, b"", anonymous=True),
    Case("a body over the JSON cap", SIGNUP, j({**OK_USER, "pad": "x" * 2_000_000}), status=413,
         anonymous=True),
    Case("XML", SIGNUP, b"<user>newbie</user>", "application/xml", status=415, anonymous=True),
    # ---- wrong types and sizes on sign-up ----
    Case("username as a list", SIGNUP, j({**OK_USER, "username": ["a"]}), anonymous=True),
    Case("username as an object", SIGNUP, j({**OK_USER, "username": {"$ne": ""}}), anonymous=True),
    Case("username of 10,000 characters", SIGNUP, j({**OK_USER, "username": "u" * 10_000}),
         anonymous=True),
    Case("username with a right-to-left override", SIGNUP, j({**OK_USER, "username": "ad\u202enim"}),
         anonymous=True),
    Case("username with spaces", SIGNUP, j({**OK_USER, "username": "new bie"}), anonymous=True),
    Case("password of 100,000 characters", SIGNUP, j({**OK_USER, "password": "p" * 100_000}),
         anonymous=True),
    Case("public key that is not base64", SIGNUP, j({**OK_USER, "public_key": "!!!"}), anonymous=True),
    Case("public key of the wrong length", SIGNUP, j({**OK_USER, "public_key": "AAAA"}),
         anonymous=True),
    # ---- models ----
    Case("model name as a list", MODELS, j({"name": ["x"]})),
    Case("model name as null", MODELS, j({"name": None})),
    Case("empty model name", MODELS, j({"name": ""})),
    Case("model name of 201 characters", MODELS, j({"name": "n" * 201})),
    Case("model name with ANSI escapes", MODELS, j({"name": "\x1b[2J\x1b[31mowned"})),
    Case("version with a zero-width space", MODELS, j({"name": "m", "version": "1\u200b"})),
    Case("description of 60 MB", MODELS, j({"name": "m", "description": "d" * 60_000_000}),
         status=413),
    Case("description of 10,001 characters", MODELS, j({"name": "m", "description": "d" * 10_001})),
    Case("artifact digest that is not a hash", MODELS, j({"name": "m", "artifact_sha256": "not-a-hash"})),
    Case("artifact digest in upper case", MODELS, j({"name": "m", "artifact_sha256": "A" * 64})),
    Case("owner signature that is not base64", MODELS, j({"name": "m", "owner_signature": "%%%"})),
    # ---- verifications ----
    Case("url missing", VERIFY, j({})),
    Case("url as a list", VERIFY, j({"url": ["https://a.example/m"]})),
    Case("url as an object", VERIFY, j({"url": {"href": "https://a.example/m"}})),
    Case("url of 3,000 characters", VERIFY, j({"url": "https://a.example/" + "p" * 3000})),
    Case("file url", VERIFY, j({"url": "file:///etc/passwd"})),
    Case("url with a CR LF", VERIFY, j({"url": "https://a.example/m\r\nX-Injected: 1"})),
    Case("url with a broken IPv6 host", VERIFY, j({"url": "http://[::1/m.onnx"})),
    Case("url with port 99999", VERIFY, j({"url": "http://a.example:99999/m.onnx"})),
    Case("target that is not a UUID", VERIFY, j({"url": "https://a.example/m", "target": "abc"})),
    Case("target as an object", VERIFY, j({"url": "https://a.example/m", "target": {"id": 1}})),
    Case("target that does not exist", VERIFY, j({"url": "https://a.example/m", "target": UUID0}),
         status=404),
    # ---- uploads ----
    Case("upload without a file", UPLOAD, multipart([("note", None, b"x")]), MP),
    Case("key sent as a text field", UPLOAD, multipart([("key", None, b"not a file")]), MP),
    Case("multipart without its boundary", UPLOAD, b"--x\r\n\r\n", "multipart/form-data"),
    Case("five files at once", UPLOAD, multipart([(f"f{i}", f"{i}.bin", b"x") for i in range(5)]),
         MP),
    Case("a key that is not safetensors", UPLOAD, multipart([("key", "k.bin", b"\0" * 64)]), MP),
    Case("Content-Length that is not a number", MODELS, j({"name": "m"}),
         headers={"CONTENT_LENGTH": "12abc"}),
    Case("Content-Length that is negative", MODELS, j({"name": "m"}),
         headers={"CONTENT_LENGTH": "-5"}),
    # ---- log queries ----
    Case("inclusion index that is not a number", "/api/log/inclusion?index=abc&size=1", method="GET",
         anonymous=True),
    Case("inclusion index below zero", "/api/log/inclusion?index=-1&size=1", method="GET",
         anonymous=True),
    Case("consistency size of 10^30", f"/api/log/consistency?old=1&new={10**30}", method="GET",
         anonymous=True),
    Case("log entry that does not exist", "/api/log/entries/99999999", method="GET",
         anonymous=True, status=404),
    Case("report id that is not a UUID", "/api/reports/not-a-uuid", method="GET", anonymous=True,
         status=404),
    # ---- tokens and headers ----
    Case("token request as a list", "/api/token", b"[]", anonymous=True),
    Case("token request nested deep", "/api/token", b"[" * 5000 + b"]" * 5000, anonymous=True),
    Case("a 10,000-character token", MODELS, j({"name": "m"}), status=401, anonymous=True,
         headers={"HTTP_AUTHORIZATION": "Token " + "t" * 10_000}),
    Case("a bearer token", MODELS, j({"name": "m"}), status=401, anonymous=True,
         headers={"HTTP_AUTHORIZATION": "Bearer abc"}),
    Case("a host name the registry does not serve", "/api/log/checkpoint", method="GET",
         anonymous=True, headers={"HTTP_HOST": "evil.example"}),
]


def test_the_corpus_has_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_request_gets_a_typed_4xx_and_leaves_nothing(db, case: Case) -> None:
    alice = make_actor("alice")
    model = RegisteredModel.objects.create(owner=alice.owner, name="base", envelope="{}")
    before = (RegisteredModel.objects.count(), Commitment.objects.count(),
              Suspect.objects.count(), Verification.objects.count())
    client = APIClient() if case.anonymous else alice.api
    path = case.path.format(model=model.public_id)
    if case.method == "GET":
        r = client.get(path, **case.headers)
    else:
        r = client.generic(case.method, path, case.body or b"", case.content_type, **case.headers)
    assert r.status_code == case.status, (r.status_code, r.content[:300])
    body = r.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == case.status and body["detail"], body
    assert r["Content-Type"].startswith("application/problem+json")
    after = (RegisteredModel.objects.count(), Commitment.objects.count(),
             Suspect.objects.count(), Verification.objects.count())
    assert after == before
