"""Hostile inference endpoints (OIP v2): slow forever, malformed answers, endless 429s,
oversized bodies, private addresses. Each is refused with a typed error and a clear message."""
from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
import torch

from tests.hostile.loopback import (
    LoopbackServer,
    NeverConnect,
    Seen,
    send,
    serve_oip,
    stub_resolver,
)
from workers.fetcher import FetchError, FetchPolicy
from workers.oip import EndpointError, oip_suspect

POLICY = FetchPolicy(allow_loopback=True, timeout_seconds=10)


def answer(data: object, shape: object, raw: bytes | None = None):  # type: ignore[no-untyped-def]
    body = raw if raw is not None else json.dumps(
        {"outputs": [{"name": "logits", "datatype": "FP32", "shape": shape, "data": data}]}).encode()
    return lambda h, _: send(h, 200, body, {"Content-Type": "application/json"})


def refuse_predict(url: str, n: int, *phrases: str, error: type[FetchError] = EndpointError,
                   policy: FetchPolicy = POLICY, **kw: object) -> FetchError:
    suspect = oip_suspect(url, policy, **kw)  # type: ignore[arg-type]
    with pytest.raises(error) as err:
        suspect.predict(torch.zeros(n, 64))
    for phrase in phrases:
        assert phrase in str(err.value), str(err.value)
    return err.value


def test_it_gives_up_on_an_endpoint_that_answers_slowly_forever(server: LoopbackServer) -> None:
    url = serve_oip(server, infer=lambda h, _: server.stop.wait(60))
    started = time.monotonic()
    e = refuse_predict(url, 4, "time limit", deadline_seconds=1.5, retries=4)
    assert not e.permanent
    assert time.monotonic() - started < 3.5


def test_it_retries_timed_out_requests_then_gives_up(server: LoopbackServer) -> None:
    url = serve_oip(server, infer=lambda h, _: server.stop.wait(60))
    refuse_predict(url, 4, "time limit", policy=FetchPolicy(allow_loopback=True,
                                                            timeout_seconds=0.3), retries=2)
    assert server.count("POST", "/v2/models/digits/infer") == 3


def test_it_cuts_off_an_endpoint_that_dribbles_its_answer(server: LoopbackServer) -> None:
    def dribble(h: BaseHTTPRequestHandler, _: Seen) -> None:
        send(h, 200, length=100_000)
        while not server.stop.wait(0.05):
            h.wfile.write(b" ")

    url = serve_oip(server, infer=dribble)
    started = time.monotonic()
    refuse_predict(url, 4, "time limit", deadline_seconds=1.5)
    assert time.monotonic() - started < 3.5


@pytest.mark.parametrize("route,phrase", [
    (answer(None, None, raw=b"{\"outputs\": [ {\"data\": [1, 2"), "returned malformed JSON"),
    (answer(None, None, raw=b"<html>502 Bad Gateway</html>"), "returned malformed JSON"),
    (answer(None, None, raw=b'{"outputs": [{"shape": [4, 1], "data": [NaN, 1, 2, 3]}]}'),
     "non-JSON number NaN"),
    (answer(None, None, raw=b'{"outputs": [{"shape": [4, 1], "data": [1e999, 1, 2, 3]}]}'),
     "non-finite numbers"),
    (answer(["a", "b", "c", "d"], [4, 1]), "non-numeric or nested output data"),
    (answer([True, False, True, False], [4, 1]), "non-numeric or nested output data"),
    (answer([[1], [2], [3], [4]], [4, 1]), "non-numeric or nested output data"),
    (answer([1.0] * 30, [3, 10]), "3 rows for 4 inputs"),
    (answer([1.0] * 40, [4, 9]), "the shape must match the data"),
    (answer([1.0] * 40, "4x10"), "the shape must match the data"),
    (answer(None, None, raw=b'{"model_name": "digits"}'), 'no "outputs" list'),
    (answer(None, None, raw=b'[1, 2, 3]'), 'no "outputs" list'),
])
def test_it_refuses_malformed_answers(server: LoopbackServer, route, phrase: str) -> None:  # type: ignore[no-untyped-def]
    url = serve_oip(server, infer=route)
    e = refuse_predict(url, 4, phrase)
    assert e.permanent
    assert server.count("POST", "/v2/models/digits/infer") == 1  # malformed is not retried


def test_it_gives_up_after_endless_429s(server: LoopbackServer) -> None:
    url = serve_oip(server, infer=lambda h, _: send(h, 429, b"slow down"))
    e = refuse_predict(url, 4, "still answered HTTP 429 after 2 retries", retries=2)
    assert not e.permanent
    assert server.count("POST", "/v2/models/digits/infer") == 3


def test_it_refuses_a_retry_after_past_the_deadline_without_waiting(server: LoopbackServer) -> None:
    url = serve_oip(server, infer=lambda h, _: send(h, 503, b"", {"Retry-After": "3600"}))
    started = time.monotonic()
    refuse_predict(url, 4, "would pass the 5 s deadline", deadline_seconds=5)
    assert time.monotonic() - started < 2


def test_it_refuses_an_endpoint_on_a_private_address() -> None:
    never = NeverConnect()
    with pytest.raises(FetchError) as err:
        oip_suspect("http://triton.internal:8000/v2/models/digits", POLICY,
                    resolver=stub_resolver({"triton.internal": ["10.0.0.7"]}), connector=never)
    assert "it resolves to 10.0.0.7, a private address" in str(err.value)
    assert err.value.permanent and never.attempts == []


def test_it_refuses_the_metadata_address_as_an_endpoint() -> None:
    never = NeverConnect()
    with pytest.raises(FetchError, match="cloud metadata service"):
        oip_suspect("http://169.254.169.254/v2/models/x", FetchPolicy(allow_private=True),
                    connector=never)
    assert never.attempts == []


@pytest.mark.parametrize("metadata,phrase", [
    ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 64]},
                 {"name": "b", "datatype": "FP32", "shape": [-1, 64]}]}, "lists 2 inputs"),
    ({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, 64]}]}, "sends float inputs"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": "dynamic"}]}, "expected a list of integers"),
    ({"inputs": [{"datatype": "FP32", "shape": [-1, 64]}]}, "no valid input name"),
    ({"name": "digits"}, "lists no inputs"),
    (b"not json at all", "returned malformed JSON"),
])
def test_it_refuses_unusable_model_metadata(server: LoopbackServer, metadata: object,
                                            phrase: str) -> None:
    url = serve_oip(server, metadata=metadata)
    with pytest.raises(EndpointError, match=phrase):
        oip_suspect(url, POLICY)
    assert server.count("POST", "/v2/models/digits/infer") == 0


def test_it_refuses_a_redirecting_endpoint(server: LoopbackServer) -> None:
    url = serve_oip(server, infer=lambda h, _: send(h, 307, headers={"Location": "http://10.0.0.1/"}))
    refuse_predict(url, 4, "inference requests are not redirected")


def test_it_refuses_an_oversized_answer(server: LoopbackServer) -> None:
    url = serve_oip(server, infer=answer([0.5] * 40_000, [4, 10_000]))
    refuse_predict(url, 4, "at the 50000-byte cap", error=FetchError,
                   policy=FetchPolicy(allow_loopback=True, max_bytes=50_000))


def test_it_refuses_queries_beyond_the_budget_without_sending_them(server: LoopbackServer) -> None:
    url = serve_oip(server, lambda x: np.zeros((len(x), 10)))
    refuse_predict(url, 11, "query budget of 10 inputs", "raise max_queries", max_queries=10)
    assert server.count("POST", "/v2/models/digits/infer") == 0


def test_it_refuses_an_unknown_model(server: LoopbackServer) -> None:
    with pytest.raises(EndpointError, match="answered HTTP 404"):
        oip_suspect(server.url("/v2/models/nope"), POLICY)


def test_it_refuses_an_endpoint_whose_class_count_changes(server: LoopbackServer) -> None:
    calls = []

    def shifting(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.zeros((len(x), 10 if len(calls) == 1 else 7))

    url = serve_oip(server, shifting)
    refuse_predict(url, 8, "returned 7 outputs per input after 10 earlier", batch_size=4)


def test_it_refuses_a_url_that_is_not_an_oip_model_url() -> None:
    with pytest.raises(EndpointError, match="not an Open Inference Protocol v2 model URL"):
        oip_suspect("http://127.0.0.1:1/models/digits.onnx", POLICY, connector=NeverConnect())
