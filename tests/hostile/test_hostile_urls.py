"""Hostile URLs: other schemes, private/loopback/metadata addresses (through stub DNS and a
connector that fails the test if reached), redirect chains, endless streams, dribbling
servers and truncated bodies. Every case asserts the refusal and an empty cache.

No test connects to anything but 127.0.0.1: private-range cases never get past the guard.
"""
from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.hostile.loopback import (
    LoopbackOnlyConnector,
    LoopbackServer,
    NeverConnect,
    Seen,
    files_under,
    send,
    stub_resolver,
)
from workers.fetcher import FetchError, FetchPolicy, fetch

NOTHING_ALLOWED = FetchPolicy()
LOOPBACK_OK = FetchPolicy(allow_loopback=True, timeout_seconds=10)


def refuse(url: str, cache: Path, *phrases: str, policy: FetchPolicy = NOTHING_ALLOWED,
           permanent: bool = True, **kw: object) -> FetchError:
    with pytest.raises(FetchError) as err:
        fetch(url, policy, cache, **kw)  # type: ignore[arg-type]
    for phrase in phrases:
        assert phrase in str(err.value), str(err.value)
    assert err.value.permanent is permanent
    assert files_under(cache) == []
    return err.value


# --- schemes and URL shapes ---------------------------------------------------------------------


@pytest.mark.parametrize("url,scheme", [
    ("file:///etc/passwd", "file"), ("ftp://example.com/model.onnx", "ftp"),
    ("data:application/octet-stream;base64,AAAA", "data"), ("gopher://example.com/1", "gopher"),
    ("//example.com/model.onnx", "no"), ("FILE:///etc/passwd", "file"),
])
def test_it_refuses_urls_that_are_not_http_or_https(tmp_path: Path, url: str, scheme: str) -> None:
    never = NeverConnect()
    refuse(url, tmp_path, f"got {scheme} scheme", "serve the model over http(s)", connector=never)
    assert never.attempts == []


def test_it_refuses_urls_with_credentials(tmp_path: Path) -> None:
    refuse("https://user:secret@example.com/m.onnx", tmp_path, "credentials are refused",
           connector=NeverConnect())


def test_it_refuses_urls_without_a_host_or_with_control_characters(tmp_path: Path) -> None:
    refuse("http:///m.onnx", tmp_path, "has no host", connector=NeverConnect())
    refuse("http://example.com/a b\r\nHost: evil", tmp_path, "control characters",
           connector=NeverConnect())


# --- the address guard, through stub DNS ---------------------------------------------------------


def test_it_refuses_a_host_resolving_to_10_slash_8(tmp_path: Path) -> None:
    never = NeverConnect()
    refuse("http://models.example.com/m.onnx", tmp_path,
           "refusing to fetch http://models.example.com/m.onnx: it resolves to 10.0.0.5, a "
           "private address; the registry only fetches public addresses (operators can set "
           "HALLMARK_FETCH_ALLOW_PRIVATE=1)",
           resolver=stub_resolver({"models.example.com": ["10.0.0.5"]}), connector=never)
    assert never.attempts == []


def test_it_refuses_the_cloud_metadata_address_even_when_private_is_allowed(tmp_path: Path) -> None:
    never = NeverConnect()
    policy = FetchPolicy(allow_private=True, allow_loopback=True)
    refuse("http://metadata.test/latest/meta-data/", tmp_path, "169.254.169.254",
           "cloud metadata service", policy=policy,
           resolver=stub_resolver({"metadata.test": ["169.254.169.254"]}), connector=never)
    refuse("http://169.254.169.254/latest/meta-data/", tmp_path, "cloud metadata service",
           policy=policy, connector=never)
    assert never.attempts == []


def test_it_refuses_ipv6_loopback_when_loopback_is_not_allowed(tmp_path: Path) -> None:
    never = NeverConnect()
    refuse("http://v6.test/m.onnx", tmp_path, "it resolves to ::1, a loopback address",
           "HALLMARK_FETCH_ALLOW_LOOPBACK=1", resolver=stub_resolver({"v6.test": ["::1"]}),
           connector=never)
    refuse("http://[::1]:8080/m.onnx", tmp_path, "a loopback address", connector=never)
    assert never.attempts == []


@pytest.mark.parametrize("ip,kind", [
    ("172.16.5.4", "a private"), ("192.168.1.1", "a private"), ("fd12:3456::1", "a private"),
    ("fe80::1", "a link-local"), ("169.254.1.1", "a link-local"),
    ("100.64.0.1", "a carrier-grade NAT"), ("0.0.0.0", "an unspecified"), ("::", "an unspecified"),
    ("224.0.0.1", "a multicast"), ("ff02::1", "a multicast"), ("240.0.0.1", "a reserved"),
    ("127.8.9.10", "a loopback"), ("::ffff:10.0.0.1", "an IPv6-wrapped private"),
    ("::ffff:127.0.0.1", "an IPv6-wrapped loopback"), ("64:ff9b::a00:1", "an IPv6-wrapped private"),
    ("2002:a00:1::1", "an IPv6-wrapped private"), ("192.0.2.7", "a special-purpose"),
    ("fd00:ec2::254", "a cloud metadata service"), ("not-an-ip", "an unparsable"),
])
def test_it_refuses_every_non_public_address_kind(tmp_path: Path, ip: str, kind: str) -> None:
    never = NeverConnect()
    refuse("https://host.test/m.onnx", tmp_path, f"it resolves to {ip}, {kind}",
           resolver=stub_resolver({"host.test": [ip]}), connector=never)
    assert never.attempts == []


def test_it_refuses_a_dns_answer_that_mixes_public_and_private(tmp_path: Path) -> None:
    never = NeverConnect()
    refuse("http://mixed.test/m.onnx", tmp_path, "it resolves to 10.9.8.7, a private address",
           resolver=stub_resolver({"mixed.test": ["93.184.215.14", "10.9.8.7"]}), connector=never)
    assert never.attempts == []


def test_it_reports_a_failed_lookup_as_transient(tmp_path: Path) -> None:
    refuse("http://nowhere.test/m.onnx", tmp_path, "cannot resolve host nowhere.test",
           permanent=False, resolver=stub_resolver({}), connector=NeverConnect())


def test_it_resolves_once_and_connects_to_the_checked_address(tmp_path: Path,
                                                              server: LoopbackServer) -> None:
    """DNS rebinding: a resolver that answers loopback, then a private address, is asked once."""
    answers = [["127.0.0.1"], ["10.0.0.1"]]
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked) - 1, 1)]

    server.file("/m.bin", b"weights")
    connector = LoopbackOnlyConnector()
    url = f"http://rebind.test:{server.port}/m.bin"
    got = fetch(url, LOOPBACK_OK, tmp_path, resolver=rebinding, connector=connector)
    assert got.path.read_bytes() == b"weights"
    assert asked == ["rebind.test"] and connector.attempts == ["127.0.0.1"]
    assert server.seen[0].headers["Host"] == f"rebind.test:{server.port}"


# --- end to end against a loopback server ----------------------------------------------------------


def test_it_refuses_a_loopback_server_when_loopback_is_not_allowed(tmp_path: Path,
                                                                  server: LoopbackServer) -> None:
    url = server.file("/m.onnx", b"data")
    refuse(url, tmp_path, "a loopback address", "HALLMARK_FETCH_ALLOW_LOOPBACK=1")
    assert server.seen == []


def test_it_refuses_a_redirect_chain_to_a_private_address(tmp_path: Path,
                                                          server: LoopbackServer) -> None:
    hop = server.route("/hop", lambda h, _: send(h, 302, headers={"Location": "http://internal.test/m.onnx"}))
    start = server.route("/start", lambda h, _: send(h, 301, headers={"Location": hop}))
    connector = LoopbackOnlyConnector()
    refuse(start, tmp_path, "refusing to fetch http://internal.test/m.onnx (redirected from",
           "it resolves to 10.0.0.5, a private address", policy=LOOPBACK_OK,
           resolver=stub_resolver({"127.0.0.1": ["127.0.0.1"], "internal.test": ["10.0.0.5"]}),
           connector=connector)
    assert connector.attempts == ["127.0.0.1", "127.0.0.1"]


def test_it_refuses_a_redirect_to_a_file_url(tmp_path: Path, server: LoopbackServer) -> None:
    url = server.route("/r", lambda h, _: send(h, 302, headers={"Location": "file:///etc/passwd"}))
    refuse(url, tmp_path, "refusing to fetch file:///etc/passwd (redirected from",
           "got file scheme", policy=LOOPBACK_OK)


def test_it_refuses_too_many_redirects(tmp_path: Path, server: LoopbackServer) -> None:
    url = server.route("/loop", lambda h, _: send(h, 302, headers={"Location": "/loop"}))
    refuse(url, tmp_path, "redirects more than 3 times", "link to the final URL",
           policy=FetchPolicy(allow_loopback=True, max_redirects=3))
    assert server.count("GET", "/loop") == 4


def zeros_forever(server: LoopbackServer):  # type: ignore[no-untyped-def]
    while not server.stop.is_set():
        yield b"\0" * 65536


def test_it_refuses_a_2_gb_download_announced_by_content_length(tmp_path: Path,
                                                                server: LoopbackServer) -> None:
    def huge(h: BaseHTTPRequestHandler, _: Seen) -> None:
        send(h, 200, headers={"Content-Type": "application/octet-stream"}, length=2 << 30)
        server.stream(h, zeros_forever(server))

    url = server.route("/huge.onnx", huge)
    refuse(url, tmp_path, "announces 2147483648 bytes, over the 1048576-byte cap",
           policy=FetchPolicy(allow_loopback=True, max_bytes=1 << 20))


def test_it_stops_an_unannounced_2_gb_stream_at_the_cap(tmp_path: Path,
                                                        server: LoopbackServer) -> None:
    def endless(h: BaseHTTPRequestHandler, _: Seen) -> None:
        h.send_response(200)
        h.end_headers()  # no Content-Length: the body ends when the server closes
        server.stream(h, zeros_forever(server))

    url = server.route("/stream.onnx", endless)
    started = time.monotonic()
    refuse(url, tmp_path, "stopped fetching", "at the 1048576-byte cap",
           policy=FetchPolicy(allow_loopback=True, max_bytes=1 << 20))
    assert time.monotonic() - started < 5
    assert server.bytes_sent < 64 << 20


def test_it_refuses_a_truncated_download(tmp_path: Path, server: LoopbackServer) -> None:
    url = server.route("/cut.onnx", lambda h, _: send(h, 200, b"x" * 500, length=1000))
    refuse(url, tmp_path, "truncated (500 of 1000 bytes arrived)", policy=LOOPBACK_OK,
           permanent=False)


def dribble(server: LoopbackServer, data: bytes, every: float):  # type: ignore[no-untyped-def]
    for i in range(len(data)):
        if server.stop.wait(every):
            return
        yield data[i:i + 1]


def test_it_cuts_off_a_server_that_dribbles_its_body(tmp_path: Path, server: LoopbackServer) -> None:
    def slow(h: BaseHTTPRequestHandler, _: Seen) -> None:
        send(h, 200, length=10_000)
        server.stream(h, dribble(server, b"x" * 10_000, 0.05))

    url = server.route("/slow.onnx", slow)
    started = time.monotonic()
    refuse(url, tmp_path, "did not finish within the 1 s time limit", permanent=False,
           policy=FetchPolicy(allow_loopback=True, timeout_seconds=1.0))
    assert time.monotonic() - started < 3


def test_it_cuts_off_a_server_that_dribbles_its_headers(tmp_path: Path,
                                                        server: LoopbackServer) -> None:
    head = b"HTTP/1.0 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000 + b"\r\n\r\n"
    url = server.route("/slow-head", lambda h, _: server.stream(h, dribble(server, head, 0.05)))
    started = time.monotonic()
    refuse(url, tmp_path, "within the 1 s time limit", permanent=False,
           policy=FetchPolicy(allow_loopback=True, timeout_seconds=1.0))
    assert time.monotonic() - started < 3


def test_it_cuts_off_a_server_that_never_answers(tmp_path: Path, server: LoopbackServer) -> None:
    url = server.route("/silent", lambda h, _: server.stop.wait(30))
    started = time.monotonic()
    refuse(url, tmp_path, "time limit", permanent=False,
           policy=FetchPolicy(allow_loopback=True, timeout_seconds=0.5))
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("status,permanent", [(404, True), (403, True), (503, False), (429, False)])
def test_it_refuses_error_statuses_and_says_whether_to_retry(tmp_path: Path, server: LoopbackServer,
                                                            status: int, permanent: bool) -> None:
    url = server.route("/e", lambda h, _: send(h, status, b"nope"))
    refuse(url, tmp_path, f"answered HTTP {status}", policy=LOOPBACK_OK, permanent=permanent)


def test_it_refuses_conflicting_content_lengths(tmp_path: Path, server: LoopbackServer) -> None:
    def conflicting(h: BaseHTTPRequestHandler, _: Seen) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "4")
        h.send_header("Content-Length", "400")
        h.end_headers()
        h.wfile.write(b"data")

    url = server.route("/cl", conflicting)
    refuse(url, tmp_path, "invalid Content-Length", policy=LOOPBACK_OK)
