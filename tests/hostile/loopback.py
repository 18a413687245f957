"""Test helpers for network code: a loopback HTTP server, stub DNS, and connectors that fail
the test if anything but loopback is ever dialled.

Used by tests/hostile and tests/workers. Nothing here talks to any address but 127.0.0.1/::1.
"""
from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Route = Callable[[BaseHTTPRequestHandler, Seen], None]


@dataclass
class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1, port 0, serving plain functions per (method, path).

    Handlers that must wait "forever" wait on `stop`, which `close()` sets, so teardown never
    hangs on them.
    """

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    bytes_sent: int = 0  # body bytes written by streaming handlers (`stream`)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 64 << 20)) if length else b""
                req = Seen(self.command, self.path, dict(self.headers.items()), body)
                server.seen.append(req)
                route = server.routes.get((self.command, self.path.split("?")[0]))
                try:
                    if route is None:
                        send(self, 404, b'{"error": "no such route"}')
                    else:
                        route(self, req)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    pass

            do_GET = _dispatch
            do_POST = _dispatch

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, fn: Route, method: str = "GET") -> str:
        """Serve `fn` at `path`; returns the full URL."""
        self.routes[(method, path)] = fn
        return self.url(path)

    def file(self, path: str, body: bytes, **headers: str) -> str:
        """Serve fixed bytes at `path` with a Content-Length."""
        return self.route(path, lambda h, _: send(h, 200, body, headers))

    def count(self, method: str, path: str) -> int:
        return sum(1 for s in self.seen if s.method == method and s.path == path)

    def stream(self, h: BaseHTTPRequestHandler, chunks: Iterator[bytes]) -> None:
        """Write chunks until the client goes away or the server stops."""
        for chunk in chunks:
            if self.stop.is_set():
                return
            h.wfile.write(chunk)
            self.bytes_sent += len(chunk)

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
         headers: dict[str, str] | None = None, *, length: int | None = None) -> None:
    """Answer with `status`, `headers`, a Content-Length (`length` overrides it) and `body`."""
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k.replace("_", "-"), v)
    h.send_header("Content-Length", str(len(body) if length is None else length))
    h.end_headers()
    h.wfile.write(body)


def stub_resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    """DNS from a table; an unknown host fails the lookup like NXDOMAIN."""
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(f"stub resolver has no entry for {host}")
        return list(table[host])
    return resolve


class LoopbackOnlyConnector:
    """Connects to loopback addresses only; records every attempt; fails the test otherwise."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __call__(self, ip: str, port: int, timeout: float) -> socket.socket:
        self.attempts.append(ip)
        if ip not in LOOPBACK:
            pytest.fail(f"the code under test tried to connect to {ip}:{port}")
        return socket.create_connection((ip, port), timeout=timeout)


class NeverConnect:
    """A connector for cases that must be refused before any connection: any call fails the test."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __call__(self, ip: str, port: int, timeout: float) -> socket.socket:
        self.attempts.append(ip)
        pytest.fail(f"the code under test tried to connect to {ip}:{port}")


def loopback_only_sockets(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Safety net for a whole test: socket.connect to anything but loopback fails the test.

    Returns the list of refused addresses (empty when all went well).
    """
    refused: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def allowed(address: object) -> bool:
        return (isinstance(address, tuple) and address[0] in LOOPBACK) or isinstance(address, str | bytes)

    def connect(self: socket.socket, address: object) -> None:
        if not allowed(address):
            refused.append(address)
            pytest.fail(f"a test tried to connect to {address!r}")
        return real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        if not allowed(address):
            refused.append(address)
            pytest.fail(f"a test tried to connect to {address!r}")
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return refused


def files_under(root: object) -> list[str]:
    """Every file below `root` (relative paths), for "nothing was left behind" assertions."""
    import os

    out = []
    for folder, _, names in os.walk(str(root)):
        out += [os.path.relpath(os.path.join(folder, n), str(root)) for n in names]
    return sorted(out)


def serve_oip(server: LoopbackServer, predict: Callable[[Any], Any] | None = None, *,
              name: str = "digits", shape: tuple[int, ...] = (-1, 64), datatype: str = "FP32",
              infer: Route | None = None, metadata: object = None) -> str:
    """Serve an Open Inference Protocol v2 model (metadata + infer) on `server`.

    `predict` maps a numpy batch shaped as the request says to (N, C) logits; `infer` replaces
    the whole infer handler; `metadata` replaces the metadata document. Returns the model URL.
    """
    import numpy as np

    meta = metadata if metadata is not None else {
        "name": name, "versions": ["1"], "platform": "pytorch_torchscript",
        "inputs": [{"name": "input__0", "datatype": datatype, "shape": list(shape)}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]}
    raw_meta = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    server.route(f"/v2/models/{name}",
                 lambda h, _: send(h, 200, raw_meta, {"Content-Type": "application/json"}))

    def default_infer(h: BaseHTTPRequestHandler, req: Seen) -> None:
        assert predict is not None
        inp = json.loads(req.body)["inputs"][0]
        x = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
        y = np.asarray(predict(x), dtype=np.float32)
        answer = {"model_name": name, "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": list(y.shape),
             "data": y.reshape(-1).tolist()}]}
        send(h, 200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    server.route(f"/v2/models/{name}/infer", infer or default_infer, method="POST")
    return server.url(f"/v2/models/{name}")
