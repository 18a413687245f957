"""workers.fetcher.fetch against a loopback server: hashing, the content-addressed cache,
conditional re-fetches, redirects, the exact size cap, and the address rules on their own."""
from __future__ import annotations

import hashlib
import resource
import signal
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.hostile.loopback import (
    LoopbackOnlyConnector,
    LoopbackServer,
    Seen,
    files_under,
    send,
    stub_resolver,
)
from workers.fetcher import Fetched, FetchError, FetchPolicy, check_address, fetch

POLICY = FetchPolicy(allow_loopback=True, timeout_seconds=10)
BODY = bytes(range(256)) * 40  # 10,240 bytes


def test_it_streams_a_file_into_the_cache_under_its_sha256(server: LoopbackServer,
                                                           tmp_path: Path) -> None:
    url = server.file("/models/m.onnx", BODY, Content_Type="application/octet-stream")
    got = fetch(url, POLICY, tmp_path)
    digest = hashlib.sha256(BODY).hexdigest()
    assert got == Fetched(tmp_path / "sha256" / digest, digest, len(BODY),
                          "application/octet-stream", url, False)
    assert got.path.read_bytes() == BODY
    assert files_under(tmp_path) == [f"sha256/{digest}"]
    seen = server.seen[0]
    assert seen.headers["User-Agent"] == POLICY.user_agent
    assert seen.headers["Accept-Encoding"] == "identity"


def test_it_stores_the_same_bytes_once(server: LoopbackServer, tmp_path: Path) -> None:
    first = fetch(server.file("/a.onnx", BODY), POLICY, tmp_path)
    second = fetch(server.file("/mirror/b.onnx", BODY), POLICY, tmp_path)
    assert (first.cached, second.cached) == (False, True)
    assert first.path == second.path and first.sha256 == second.sha256
    assert files_under(tmp_path / "sha256") == [first.sha256]


def test_it_revalidates_a_known_url_instead_of_downloading_it_again(server: LoopbackServer,
                                                                   tmp_path: Path) -> None:
    etag = '"v1"'

    def conditional(h: BaseHTTPRequestHandler, req: Seen) -> None:
        if req.headers.get("If-None-Match") == etag:
            send(h, 304, headers={"ETag": etag})
        else:
            send(h, 200, BODY, {"ETag": etag, "Content-Type": "application/octet-stream"})

    url = server.route("/m.onnx", conditional)
    first = fetch(url, POLICY, tmp_path)
    second = fetch(url, POLICY, tmp_path)
    assert not first.cached and second.cached
    assert second.path == first.path and second.size == len(BODY)
    assert second.content_type == "application/octet-stream"
    assert [s.headers.get("If-None-Match") for s in server.seen] == [None, etag]


def test_it_downloads_again_when_the_cached_file_is_gone(server: LoopbackServer,
                                                         tmp_path: Path) -> None:
    url = server.file("/m.onnx", BODY, ETag='"v1"')
    first = fetch(url, POLICY, tmp_path)
    first.path.unlink()
    again = fetch(url, POLICY, tmp_path)
    assert not again.cached and again.path.read_bytes() == BODY
    assert "If-None-Match" not in server.seen[1].headers


def test_it_follows_redirects_and_reports_the_final_url(server: LoopbackServer,
                                                        tmp_path: Path) -> None:
    final = server.file("/final/m.onnx", BODY)
    server.route("/b", lambda h, _: send(h, 307, headers={"Location": "/final/m.onnx"}))
    start = server.route("/a", lambda h, _: send(h, 302, headers={"Location": server.url("/b")}))
    got = fetch(start, FetchPolicy(allow_loopback=True, max_redirects=2), tmp_path)
    assert got.final_url == final and got.path.read_bytes() == BODY
    assert [s.path for s in server.seen] == ["/a", "/b", "/final/m.onnx"]


@pytest.mark.parametrize("announce", [True, False])
def test_the_size_cap_is_exact(server: LoopbackServer, tmp_path: Path, announce: bool) -> None:
    def body(h: BaseHTTPRequestHandler, _: Seen) -> None:
        if announce:
            send(h, 200, BODY)
        else:
            h.send_response(200)
            h.end_headers()
            h.wfile.write(BODY)

    url = server.route("/m.onnx", body)
    assert fetch(url, FetchPolicy(allow_loopback=True, max_bytes=len(BODY)), tmp_path).size == len(BODY)
    other = tmp_path / "other"
    with pytest.raises(FetchError, match=f"{len(BODY) - 1}-byte cap") as err:
        fetch(url, FetchPolicy(allow_loopback=True, max_bytes=len(BODY) - 1), other)
    assert err.value.permanent and files_under(other) == []


def test_it_connects_to_the_resolved_ip_with_the_original_host_name(server: LoopbackServer,
                                                                    tmp_path: Path) -> None:
    server.file("/m.onnx", BODY)
    connector = LoopbackOnlyConnector()
    got = fetch(f"http://models.example.test:{server.port}/m.onnx", POLICY, tmp_path,
                resolver=stub_resolver({"models.example.test": ["127.0.0.1"]}),
                connector=connector)
    assert got.size == len(BODY) and connector.attempts == ["127.0.0.1"]
    assert server.seen[0].headers["Host"] == f"models.example.test:{server.port}"


def test_check_address_allows_public_addresses_under_any_policy() -> None:
    for ip in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "8.8.8.8"):
        check_address(ip, FetchPolicy())


@pytest.mark.parametrize("ip", ["127.0.0.1", "::1", "127.1.2.3"])
def test_check_address_allows_loopback_only_when_the_policy_does(ip: str) -> None:
    check_address(ip, FetchPolicy(allow_loopback=True))
    for policy in (FetchPolicy(), FetchPolicy(allow_private=True)):
        with pytest.raises(FetchError, match="loopback address") as err:
            check_address(ip, policy)
        assert err.value.permanent


@pytest.mark.parametrize("ip", ["10.0.0.5", "172.31.255.255", "192.168.0.1", "fd00::1"])
def test_check_address_allows_private_only_when_the_policy_does(ip: str) -> None:
    check_address(ip, FetchPolicy(allow_private=True))
    with pytest.raises(FetchError, match=f"{ip} is a private address.*HALLMARK_FETCH_ALLOW_PRIVATE"):
        check_address(ip, FetchPolicy(allow_loopback=True))


@pytest.mark.parametrize("ip", ["169.254.169.254", "fe80::1", "100.64.1.1", "0.0.0.0", "224.0.0.251",
                                "::ffff:169.254.169.254", "fd00:ec2::254"])
def test_check_address_never_allows_link_local_metadata_or_special_addresses(ip: str) -> None:
    with pytest.raises(FetchError, match="never fetches from such addresses"):
        check_address(ip, FetchPolicy(allow_loopback=True, allow_private=True))


def test_a_body_of_many_chunks_is_hashed_written_and_flushed_in_order(
        server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.fetcher import HashWriter

    monkeypatch.setattr(HashWriter, "SYNC_EVERY", 1 << 20)  # several flushes mid-body
    monkeypatch.setattr(HashWriter, "QUEUED", 2)  # the receiver waits on the helpers
    body = hashlib.sha256(b"seed").digest() * (6 << 15)  # 6 MiB, no two chunks alike
    threads = threading.active_count()
    got = fetch(server.file("/big.safetensors", body), POLICY, tmp_path)
    assert got.sha256 == hashlib.sha256(body).hexdigest() and got.size == len(body)
    assert got.path.read_bytes() == body
    assert threading.active_count() == threads  # the helpers are gone


def test_a_failing_cache_write_fails_the_fetch_and_leaves_nothing(
        server: LoopbackServer, tmp_path: Path) -> None:
    body = bytes(4 << 20)
    url = server.file("/big.safetensors", body)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the cap: EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(FetchError, match="could not write the download to the cache after"):
            fetch(url, POLICY, tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert files_under(tmp_path) == []  # no partial file in the cache
    assert [t.name for t in threading.enumerate() if t.name.startswith("fetch-")] == []
