"""workers.oip against a local Open Inference Protocol v2 server wrapping a real torch model."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
import torch

from tests.hostile.loopback import LoopbackServer, Seen, send, serve_oip
from verifier.toy import CNN, MLP
from workers.fetcher import FetchPolicy
from workers.oip import OipClient, is_oip_url, oip_suspect, parse_oip_url

POLICY = FetchPolicy(allow_loopback=True, timeout_seconds=10)
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(hidden=16).eval()


def torch_predict(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()
    return predict


def infer_shapes(server: LoopbackServer, path: str = "/v2/models/digits/infer") -> list[list[int]]:
    return [json.loads(s.body)["inputs"][0]["shape"] for s in server.seen
            if s.method == "POST" and s.path == path]


def test_it_predicts_what_the_served_torch_model_predicts(server: LoopbackServer, mlp: MLP) -> None:
    url = serve_oip(server, torch_predict(mlp))
    suspect = oip_suspect(url + "/infer", POLICY)
    assert suspect.has_predict and not suspect.has_weights
    x = torch.rand(100, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = mlp(x)
    got = suspect.predict(x)
    assert got.shape == (100, 10) and torch.allclose(got, want, atol=1e-5, rtol=0)
    assert suspect.queries == 100
    assert "OIP v2 endpoint" in suspect.description


def test_it_sends_queries_in_batches_and_counts_them(server: LoopbackServer, mlp: MLP) -> None:
    url = serve_oip(server, torch_predict(mlp))
    client = OipClient(url, POLICY, batch_size=64, rate_per_second=1000)
    out = client(torch.rand(150, 64))
    assert out.shape == (150, 10)
    assert infer_shapes(server) == [[64, 64], [64, 64], [22, 64]]
    assert (client.queries, client.requests, client.retried) == (150, 4, 0)  # metadata + 3
    body = json.loads(server.seen[1].body)
    assert body["inputs"][0]["name"] == "input__0" and body["inputs"][0]["datatype"] == "FP32"


def test_it_reshapes_inputs_to_the_metadata_shape(server: LoopbackServer) -> None:
    torch.manual_seed(2)
    cnn = CNN().eval()
    url = serve_oip(server, torch_predict(cnn), shape=(-1, 1, 8, 8))
    x = torch.rand(5, 64)
    got = oip_suspect(url, POLICY).predict(x)
    with torch.no_grad():
        assert torch.allclose(got, cnn(x), atol=1e-5, rtol=0)
    assert infer_shapes(server) == [[5, 1, 8, 8]]


def test_it_retries_a_429_after_the_time_retry_after_asks(server: LoopbackServer, mlp: MLP) -> None:
    predict = torch_predict(mlp)
    answers = iter([429])

    def busy_then_ok(h: BaseHTTPRequestHandler, req: Seen) -> None:
        status = next(answers, 200)
        if status == 429:
            send(h, 429, b"busy", {"Retry-After": "2"})
            return
        inp = json.loads(req.body)["inputs"][0]
        y = predict(np.asarray(inp["data"], np.float32).reshape(inp["shape"]))
        send(h, 200, json.dumps({"outputs": [{"name": "logits", "shape": list(y.shape),
                                              "datatype": "FP32", "data": y.ravel().tolist()}]}).encode())

    url = serve_oip(server, infer=busy_then_ok)
    slept: list[float] = []
    client = OipClient(url, POLICY, sleep=slept.append, rate_per_second=1e6)
    out = client(torch.rand(3, 64))
    assert out.shape == (3, 10)
    assert [s for s in slept if s > 0.01] == [2.0]  # Retry-After beats the 0.25 s backoff
    assert (client.queries, client.retried) == (3, 1)
    assert server.count("POST", "/v2/models/digits/infer") == 2


def test_it_backs_off_exponentially_on_5xx(server: LoopbackServer, mlp: MLP) -> None:
    predict = torch_predict(mlp)
    answers = iter([503, 502])

    def flaky(h: BaseHTTPRequestHandler, req: Seen) -> None:
        status = next(answers, 200)
        if status != 200:
            send(h, status, b"")
            return
        inp = json.loads(req.body)["inputs"][0]
        y = predict(np.asarray(inp["data"], np.float32).reshape(inp["shape"]))
        send(h, 200, json.dumps({"outputs": [{"name": "logits", "shape": list(y.shape),
                                              "datatype": "FP32", "data": y.ravel().tolist()}]}).encode())

    url = serve_oip(server, infer=flaky)
    slept: list[float] = []
    client = OipClient(url, POLICY, sleep=slept.append, rate_per_second=1e6)
    client(torch.rand(2, 64))
    assert [s for s in slept if s > 0.01] == [0.25, 0.5]
    assert client.retried == 2


def test_it_limits_the_request_rate(server: LoopbackServer, mlp: MLP) -> None:
    url = serve_oip(server, torch_predict(mlp))
    slept: list[float] = []
    client = OipClient(url, POLICY, batch_size=1, rate_per_second=1, sleep=slept.append)
    client(torch.rand(5, 64))
    # six requests (metadata + 5), one per second: the client waits before each of the last five
    assert len(slept) == 5 and all(0 < s <= 1.0 for s in slept)
    assert client.requests == 6


def test_it_reaches_a_versioned_model_under_a_path_prefix(server: LoopbackServer, mlp: MLP) -> None:
    predict = torch_predict(mlp)
    meta = {"name": "digits", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}
    base = "/serving/v2/models/digits/versions/3"
    server.route(base, lambda h, _: send(h, 200, json.dumps(meta).encode()))

    def infer(h: BaseHTTPRequestHandler, req: Seen) -> None:
        inp = json.loads(req.body)["inputs"][0]
        y = predict(np.asarray(inp["data"], np.float32).reshape(inp["shape"]))
        # a second, unrelated output first: the client picks the metadata's output by name
        send(h, 200, json.dumps({"outputs": [
            {"name": "probabilities", "shape": [len(y), 1], "datatype": "FP32", "data": [0.0] * len(y)},
            {"name": "logits", "shape": list(y.shape), "datatype": "FP32",
             "data": y.ravel().tolist()}]}).encode())

    server.route(base + "/infer", infer, method="POST")
    x = torch.rand(4, 64)
    got = oip_suspect(server.url(base), POLICY).predict(x)
    with torch.no_grad():
        assert torch.allclose(got, mlp(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("url,expected", [
    ("http://h/v2/models/digits", True), ("https://h:8443/v2/models/digits/infer", True),
    ("http://h/prefix/v2/models/m/versions/2/infer", True), ("http://h/v2/models/digits/", True),
    ("http://h/models/digits.onnx", False), ("http://h/v2/models/", False),
    ("http://h/v2/models/digits/ready", False), ("http://h/v2/models/a/b/c", False),
])
def test_is_oip_url_recognises_model_urls_by_their_path(url: str, expected: bool) -> None:
    assert is_oip_url(url) is expected


def test_parse_oip_url_splits_base_name_version_and_endpoints() -> None:
    t = parse_oip_url("https://kserve.example:8443/ns/v2/models/digits/versions/7/infer")
    assert (t.base, t.name, t.version) == ("https://kserve.example:8443/ns", "digits", "7")
    assert t.model_url == "https://kserve.example:8443/ns/v2/models/digits/versions/7"
    assert t.infer_url == t.model_url + "/infer"
