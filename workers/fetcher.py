"""Fetch a suspect URL into a content-addressed cache, safely. No Django: the caller passes the policy.

`fetch(url, policy, cache_dir)` downloads over http(s) only, through the address guard of
`workers.netguard` (resolved IPs checked, connection pinned to the checked IP, redirects
followed by hand and each target checked again), streams into a temporary file in the cache
folder while hashing, stops at the size cap and at the total deadline, refuses truncated
bodies, and renames the file atomically to `cache_dir/sha256/<hex>`. The temporary file is
removed on every failure path, so the cache only ever holds complete, hashed files.

Same bytes are stored once: a second download with the same digest keeps the existing file
(`cached=True`). When the server sent an ETag or Last-Modified, the URL is remembered in
`cache_dir/urls/` and the next fetch of that URL is a conditional request; a 304 answer reuses
the stored file without downloading it again (`cached=True`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from workers.netguard import (
    Connector,
    Deadline,
    Exchange,
    FetchError,
    FetchPolicy,
    Resolver,
    check_address,
    open_exchange,
    parse_target,
    show_url,
)

__all__ = ["FetchError", "FetchPolicy", "Fetched", "check_address", "fetch"]

_REDIRECTS = {301, 302, 303, 307, 308}
_VALIDATOR = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,255}")  # printable ASCII, at most 256 chars


@dataclass(frozen=True)
class Fetched:
    """A fetched file in the content-addressed cache."""

    path: Path  # cache_dir/sha256/<hex>
    sha256: str  # hex digest of the bytes
    size: int  # bytes
    content_type: str  # as the server sent it (sanitized), "" if none
    final_url: str  # after redirects
    cached: bool  # True when these bytes were already in the cache (nothing new stored)


def fetch(url: str, policy: FetchPolicy, cache_dir: Path, *, resolver: Resolver | None = None,
          connector: Connector | None = None) -> Fetched:
    """Download `url` into the content-addressed cache under `policy`.

    Args:
        url: an http:// or https:// URL.
        policy: size cap, total deadline, redirects and which address kinds are allowed.
        cache_dir: the cache root; files land in cache_dir/sha256/<hex>.
        resolver: (host, port) -> IP strings; default: the system resolver (tests stub DNS).
        connector: (ip, port, timeout) -> connected socket; default: socket.create_connection.

    Returns:
        Fetched(path, sha256, size, content_type, final_url, cached).

    Raises:
        FetchError: every refusal and failure; `permanent` says whether a retry can help.

    Example:
        >>> fetch("file:///etc/passwd", FetchPolicy(), Path("/tmp/c"))
        Traceback (most recent call last):
        ...
        workers.netguard.FetchError: refusing to fetch file:///etc/passwd: only http:// and https:// URLs are fetched (got file scheme); serve the model over http(s)
    """
    deadline = Deadline(policy.timeout_seconds)
    store = _Store(Path(cache_dir))
    remembered = store.remembered(url)
    current, origin = url, None
    for _ in range(policy.max_redirects + 1):
        target = parse_target(current, origin)
        with open_exchange("GET", target, policy, deadline, headers=_headers(policy, remembered),
                           resolver=resolver, connector=connector) as ex:
            if ex.status in _REDIRECTS:
                location = ex.headers.get("Location")
                if not location:
                    raise FetchError(f"could not fetch {target.shown}: HTTP {ex.status} without a "
                                     "Location header; link to the file itself", permanent=True)
                current, origin = urljoin(current, location.strip()), url
                continue
            if ex.status == 304 and remembered is not None:
                return store.reuse(remembered, current)
            _check_status(ex)
            declared = ex.content_length()
            if declared is not None and declared > policy.max_bytes:
                raise FetchError(f"refusing to fetch {target.shown}: the server announces "
                                 f"{declared} bytes, over the {policy.max_bytes}-byte cap; send a "
                                 "smaller model (operators can raise the cap)", permanent=True)
            fetched = store.write(ex, policy.max_bytes, current)
            store.remember(url, fetched, ex)
            return fetched
    raise FetchError(f"refusing to fetch {show_url(url)}: it redirects more than "
                     f"{policy.max_redirects} times (last to {show_url(current)}); link to the "
                     "final URL", permanent=True)


def _headers(policy: FetchPolicy, remembered: dict[str, Any] | None) -> dict[str, str]:
    headers = {"User-Agent": policy.user_agent, "Accept": "*/*",
               "Accept-Encoding": "identity", "Connection": "close"}
    if remembered is not None:
        if remembered.get("etag"):
            headers["If-None-Match"] = remembered["etag"]
        if remembered.get("last_modified"):
            headers["If-Modified-Since"] = remembered["last_modified"]
    return headers


def _check_status(ex: Exchange) -> None:
    """Only 200 carries a file; 408/429/5xx may pass with time, other codes will not."""
    if ex.status == 200:
        return
    transient = ex.status in (408, 429) or ex.status >= 500
    raise FetchError(f"could not fetch {ex.target.shown}: the server answered HTTP {ex.status} "
                     f"{show_url(ex.resp.reason or '', 60)}; "
                     + ("retry later" if transient else "check the URL"), permanent=not transient)


class _Store:
    """The cache folder: blobs in sha256/<hex>, URL validators in urls/<sha256(url)>.json."""

    def __init__(self, root: Path) -> None:
        self.blobs = root / "sha256"
        self.urls = root / "urls"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def write(self, ex: Exchange, max_bytes: int, final_url: str) -> Fetched:
        """Stream the body into a temp file in the blob folder, hash it, rename it into place."""
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".part-")
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                sink = HashWriter(f)
                try:
                    size = ex.read_body(max_bytes, sink)
                except BaseException:
                    sink.abort()
                    raise
                hexdigest = sink.finish()  # hashed, written and fsynced
            final = self.blobs / hexdigest
            cached = final.exists()
            if cached:
                os.unlink(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return Fetched(final, hexdigest, size, _content_type(ex), final_url, cached)

    def remembered(self, url: str) -> dict[str, Any] | None:
        """The validators stored for `url`, if its blob is still in the cache."""
        try:
            entry = json.loads((self.urls / f"{_url_key(url)}.json").read_text())
        except (OSError, ValueError):
            return None
        if (not isinstance(entry, dict) or entry.get("url") != url
                or not re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256")))
                or not (self.blobs / entry["sha256"]).is_file()):
            return None
        return entry

    def reuse(self, entry: dict[str, Any], final_url: str) -> Fetched:
        path = self.blobs / entry["sha256"]
        return Fetched(path, entry["sha256"], path.stat().st_size,
                       str(entry.get("content_type", "")), final_url, True)

    def remember(self, url: str, fetched: Fetched, ex: Exchange) -> None:
        """Store the response's ETag / Last-Modified for conditional requests next time."""
        etag = _validator(ex.headers.get("ETag"))
        modified = _validator(ex.headers.get("Last-Modified"))
        if not etag and not modified:
            return
        self.urls.mkdir(parents=True, exist_ok=True)
        entry = {"url": url, "sha256": fetched.sha256, "etag": etag, "last_modified": modified,
                 "content_type": fetched.content_type}
        fd, tmp = tempfile.mkstemp(dir=self.urls, prefix=".part-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry, f)
            os.replace(tmp, self.urls / f"{_url_key(url)}.json")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class HashWriter:
    """A body sink that hashes and writes on two helper threads while the caller receives the
    next chunk, so receiving, SHA-256 and the disk (both release the GIL) overlap instead of
    adding up: the fetch runs at about SHA-256's single-thread speed.

    The writer flushes the file to disk every SYNC_EVERY bytes, so the final fsync (the file
    is durable before it is renamed into the cache) waits for the last few megabytes only,
    not for the whole file. Queues are bounded (QUEUED chunks), so memory stays bounded when
    the disk or the hash falls behind the network.
    """

    QUEUED = 32  # chunks in flight per helper (CHUNK bytes each at most)
    SYNC_EVERY = 64 << 20  # bytes written between two fdatasync calls

    def __init__(self, f: Any) -> None:
        self._f = f
        self._digest = hashlib.sha256()
        self._written = self._synced = 0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._queues: list[queue.Queue[bytes | None]] = []
        self._threads = []
        for name, work in (("hash", self._digest.update), ("write", self._write)):
            q: queue.Queue[bytes | None] = queue.Queue(maxsize=self.QUEUED)
            t = threading.Thread(target=self._drain, args=(q, work), name=f"fetch-{name}",
                                 daemon=True)
            self._queues.append(q)
            self._threads.append(t)
            t.start()

    def __call__(self, chunk: bytes) -> None:
        for q in self._queues:
            self._put(q, chunk)

    def _put(self, q: queue.Queue[bytes | None], item: bytes | None) -> None:
        """Queue `item`, raising a helper's error instead of waiting on a helper that died."""
        while True:
            if self._error is not None:
                raise self._error
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> str:
        """Wait for both helpers, fsync the file; returns the hex SHA-256. Raises what a
        helper raised (a full disk, say)."""
        for q in self._queues:
            self._put(q, None)
        for t in self._threads:
            t.join()
        if self._error is not None:
            raise self._error
        os.fsync(self._f.fileno())
        return self._digest.hexdigest()

    def abort(self) -> None:
        """Stop both helpers without finishing (the body was refused)."""
        self._stop.set()
        for q in self._queues:
            with contextlib.suppress(queue.Full):
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)
        for t in self._threads:
            t.join()

    def _drain(self, q: queue.Queue[bytes | None], work: Any) -> None:
        try:
            while (chunk := q.get()) is not None and not self._stop.is_set():
                work(chunk)
        except BaseException as e:  # handed to the receiving thread, which raises it
            self._error = e
            self._stop.set()

    def _write(self, chunk: bytes) -> None:
        try:
            view = memoryview(chunk)
            while view:  # an unbuffered write may be partial
                view = view[self._f.write(view):]
            self._written += len(chunk)
            if self._written - self._synced >= self.SYNC_EVERY:
                os.fdatasync(self._f.fileno())
                self._synced = self._written
        except OSError as e:
            raise FetchError(f"could not write the download to the cache after "
                             f"{self._written} bytes ({e.strerror or e}); free space in the "
                             "cache folder (HALLMARK_DATA_DIR/cache) or raise its quota, then "
                             "retry", permanent=False) from None


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def _validator(value: str | None) -> str:
    """An ETag / Last-Modified value safe to send back, or "" (never a header injection)."""
    return value.strip() if value and _VALIDATOR.fullmatch(value.strip()) else ""


def _content_type(ex: Exchange) -> str:
    value = (ex.headers.get("Content-Type") or "").strip()
    return value[:200] if re.fullmatch(r"[\x20-\x7e]*", value) else ""
