"""Byte ranges of a Hub file over guarded connections, redirects (to the CDN) followed by hand.

`get_range(url, begin, end, …)` sends `Range: bytes=begin-(end-1)` through
`workers.netguard.open_exchange`, so every hop — the Hub's `resolve` URL and the CDN host it
redirects to — is resolved, checked against the address policy and pinned; a redirect to a
private address is refused before any connection is made. The answer must be a 206 whose
Content-Range names exactly the range asked for, and whose body is exactly `end - begin` bytes.
A 200 answer means the server ignores Range: `RangeIgnored` is raised without reading the body
(the caller falls back to a full download within the size cap).

The token (gated repos) goes only to the Hub's own host, never to a redirect target on another
host (the CDN's URLs are pre-signed), as huggingface_hub does.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urljoin

from workers.netguard import (
    Connector,
    Deadline,
    Exchange,
    FetchError,
    FetchPolicy,
    Resolver,
    open_exchange,
    parse_target,
    show_url,
)

_REDIRECTS = {301, 302, 303, 307, 308}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class RangeIgnored(FetchError):
    """The server answered a Range request with the whole file (HTTP 200)."""


def get_range(url: str, begin: int, end: int, policy: FetchPolicy, *, token: str | None = None,
              resolver: Resolver | None = None, connector: Connector | None = None) -> bytes:
    """Bytes [begin, end) of the file at `url`.

    Args:
        url: a Hub `resolve` URL (or any http(s) URL of the file).
        begin: first byte; end: one past the last byte (end > begin).
        policy: address rules, deadline and redirect limit (the size cap does not apply: the
            body is exactly the range asked for).
        token: sent as a Bearer token to the first URL's host only.
        resolver, connector: as for `workers.fetcher.fetch` (tests stub DNS).

    Returns:
        Exactly end - begin bytes.

    Raises:
        RangeIgnored: the server sent the whole file (200) instead of the range.
        FetchError: refused address or redirect, HTTP errors, wrong Content-Range, short body.
    """
    if not 0 <= begin < end:
        raise ValueError(f"an empty or inverted range [{begin}, {end}) was asked for")
    with _follow(url, policy, token, f"bytes={begin}-{end - 1}", resolver, connector) as ex:
        if ex.status == 200:
            raise RangeIgnored(f"{ex.target.shown} ignores Range requests (it answered 200 with "
                               "the whole file)", permanent=True)
        _check_status(ex, 206, f"bytes {begin}-{end - 1} of ")
        _check_content_range(ex.headers.get("Content-Range", ""), begin, end, ex.target.shown)
        chunks: list[bytes] = []
        got = ex.read_body(end - begin, chunks.append)
        if got != end - begin:
            raise FetchError(f"could not fetch bytes {begin}-{end - 1} of {ex.target.shown}: "
                             f"{got} bytes arrived, not {end - begin}; retry later",
                             permanent=False)
        return b"".join(chunks)


def download(url: str, policy: FetchPolicy, sink: Callable[[bytes], object], *,
             token: str | None = None, resolver: Resolver | None = None,
             connector: Connector | None = None) -> int:
    """Stream the whole file at `url` into `sink`, at most `policy.max_bytes`; the byte count.

    Raises:
        FetchError: refused address or redirect, HTTP errors, over the cap, truncated body.
    """
    with _follow(url, policy, token, None, resolver, connector) as ex:
        _check_status(ex, 200, "")
        declared = ex.content_length()
        if declared is not None and declared > policy.max_bytes:
            raise FetchError(f"refusing to fetch {ex.target.shown}: the server announces "
                             f"{declared} bytes, over the {policy.max_bytes}-byte cap "
                             "(HALLMARK_FETCH_MAX_BYTES); link one smaller file, or let the "
                             "registry read byte ranges", permanent=True)
        return ex.read_body(policy.max_bytes, sink)


def _follow(url: str, policy: FetchPolicy, token: str | None, rng: str | None,
            resolver: Resolver | None, connector: Connector | None) -> Exchange:
    """The exchange that answers `url` after following redirects by hand, each hop guarded."""
    deadline = Deadline(policy.timeout_seconds)
    first = parse_target(url)
    current, origin = url, None
    for _ in range(policy.max_redirects + 1):
        target = parse_target(current, origin)
        headers = {"User-Agent": policy.user_agent, "Accept": "*/*",
                   "Accept-Encoding": "identity", "Connection": "close"}
        if rng:
            headers["Range"] = rng
        if token and (target.scheme, target.host, target.port) == (first.scheme, first.host,
                                                                    first.port):
            headers["Authorization"] = f"Bearer {token}"
        ex = open_exchange("GET", target, policy, deadline, headers=headers, resolver=resolver,
                           connector=connector)
        if ex.status not in _REDIRECTS:
            return ex
        location = ex.headers.get("Location")
        ex.close()
        if not location:
            raise FetchError(f"could not fetch {target.shown}: HTTP {ex.status} without a "
                             "Location header", permanent=True)
        current, origin = urljoin(current, location.strip()), url
    raise FetchError(f"refusing to fetch {show_url(url)}: it redirects more than "
                     f"{policy.max_redirects} times", permanent=True)


def _check_status(ex: Exchange, wanted: int, what: str) -> None:
    if ex.status == wanted:
        return
    transient = ex.status in (408, 429) or ex.status >= 500
    ex.close()
    raise FetchError(f"could not fetch {what}{ex.target.shown}: the server answered HTTP "
                     f"{ex.status}; " + ("retry later" if transient else
                                         "check the repo, revision and token"),
                     permanent=not transient)


def _check_content_range(value: str, begin: int, end: int, shown: str) -> None:
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if not m or int(m[1]) != begin or int(m[2]) != end - 1:
        raise FetchError(f"could not fetch bytes {begin}-{end - 1} of {shown}: the server sent "
                         f"Content-Range {show_url(value, 80)!r}, not that range; the server "
                         "does not serve byte ranges correctly (set HALLMARK_HUB_FULL_DOWNLOAD=1)",
                         permanent=True)
