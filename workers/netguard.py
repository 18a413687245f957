"""The network guard shared by the fetcher and the OIP client: one HTTP exchange, made safely.

Every outgoing request goes through `open_exchange`, which:
1. accepts only http:// and https:// URLs with a host and no credentials;
2. resolves the host once (through an injectable `resolver`) and checks EVERY resolved address
   with `check_address` (private, loopback, link-local/metadata, CGNAT, multicast, reserved,
   unspecified, and IPv4-mapped / NAT64 / 6to4 forms of those are refused unless the policy
   allows that kind), then connects to that exact IP (through an injectable `connector`), so
   DNS rebinding between check and connect is impossible. The Host header and TLS SNI /
   certificate check use the original host name;
3. enforces a TOTAL deadline with a watchdog that shuts the socket down when time is up (a
   server that dribbles one byte per second is cut off), on top of per-operation socket
   timeouts;
4. reads bodies with a byte cap and refuses truncated bodies (fewer bytes than Content-Length).

No Django, no Celery: the caller passes a `FetchPolicy`.
"""
from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

GiB = 1 << 30
CHUNK = 64 * 1024  # bytes per read

Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP address strings
Connector = Callable[[str, int, float], socket.socket]  # (ip, port, timeout) -> connected socket


@dataclass(frozen=True)
class FetchPolicy:
    """What the registry's workers may fetch; the operator's settings fill it in."""

    max_bytes: int = 2 * GiB  # a body larger than this is stopped at the cap and discarded
    timeout_seconds: float = 600.0  # total wall time of one fetch, redirects included
    connect_timeout: float = 10.0  # DNS lookup and TCP/TLS connect, per attempt
    max_redirects: int = 5  # redirects followed, each target checked again
    allow_loopback: bool = False  # 127.0.0.0/8 and ::1 (tests and demos only)
    allow_private: bool = False  # 10/8, 172.16/12, 192.168/16, fc00::/7 (private deployments)
    user_agent: str = "hallmark-fetcher/0.1"  # sent with every request


class FetchError(Exception):
    """A refused or failed fetch. `permanent` says whether retrying the same URL can help.

    Example:
        >>> e = FetchError("refusing to fetch ftp://x/m: only http and https", permanent=True)
        >>> e.permanent, str(e)
        (True, 'refusing to fetch ftp://x/m: only http and https')
    """

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.message = message  # names the problem, what was received, and the fix
        self.permanent = permanent  # True: retrying cannot help (policy, 4xx, cap, format)


_PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                              "fc00::/7")]
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Cloud metadata services, refused whatever the policy (two of them sit in ranges the policy
# can allow: fd00:ec2::254 is in fc00::/7, 100.100.100.200 in the CGNAT range).
_METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254",
                                               "100.100.100.200", "169.254.170.2")}
_NEVER = "the registry never fetches from such addresses"


def check_address(ip: str, policy: FetchPolicy) -> None:
    """Refuse an IP address the registry must not connect to under `policy`.

    Rules (in order): unparsable -> refused; a cloud metadata address -> always refused;
    IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are
    judged by the IPv4 address they embed; loopback -> allowed only with `allow_loopback`;
    10/8, 172.16/12, 192.168/16, fc00::/7 -> allowed only with `allow_private`; unspecified,
    link-local (169.254/16, fe80::/10), multicast, CGNAT (100.64/10), reserved, site-local and
    every other non-global range -> always refused.

    Raises:
        FetchError: permanent, with a message naming the address, its kind and the setting
            that would allow it (if any).

    Example:
        >>> check_address("93.184.215.14", FetchPolicy())
        >>> check_address("10.0.0.5", FetchPolicy(allow_private=True))
    """
    verdict = address_kind(ip)
    if verdict is None:
        return
    kind, allowed_by = verdict
    if (allowed_by == "allow_loopback" and policy.allow_loopback) or (
            allowed_by == "allow_private" and policy.allow_private):
        return
    raise FetchError(f"{ip} is {_article(kind)} {kind} address; {_refusal_hint(allowed_by)}",
                     permanent=True)


def address_kind(ip: str) -> tuple[str, str | None] | None:
    """None for a public address, else (kind, the policy flag that allows it or None)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "unparsable", None
    if addr in _METADATA:
        return "cloud metadata service", None
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour or (
            ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF) if addr in _NAT64 else None)
        if embedded is not None:
            inner = address_kind(str(embedded))
            return None if inner is None else (f"IPv6-wrapped {inner[0]}", inner[1])
    if addr.is_unspecified:
        return "unspecified", None
    if addr.is_loopback:
        return "loopback", "allow_loopback"
    if addr.is_link_local:
        return "link-local", None
    if addr.is_multicast:
        return "multicast", None
    if isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT:
        return "carrier-grade NAT (100.64/10)", None
    if any(addr in net for net in _PRIVATE):
        return "private", "allow_private"
    if addr.is_reserved:
        return "reserved", None
    if isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local:
        return "site-local", None
    if not addr.is_global:
        return "special-purpose", None
    return None


def _refusal_hint(allowed_by: str | None) -> str:
    if allowed_by == "allow_private":
        return ("the registry only fetches public addresses (operators can set "
                "HALLMARK_FETCH_ALLOW_PRIVATE=1)")
    if allowed_by == "allow_loopback":
        return ("the registry only fetches public addresses (operators can set "
                "HALLMARK_FETCH_ALLOW_LOOPBACK=1, for tests and demos only)")
    return f"{_NEVER}; serve the model from a public address"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class Target:
    """A checked http(s) URL, split for connecting."""

    url: str  # the URL as given
    scheme: str  # "http" | "https"
    host: str  # host name or IP literal, lowercase, without brackets
    port: int  # explicit or default port
    request_path: str  # path + query sent in the request line
    shown: str  # the URL for messages (truncated), with "(redirected from …)" if relevant


def show_url(url: str, limit: int = 200) -> str:
    """A URL for messages: control characters escaped, truncated."""
    text = url.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"


def parse_target(url: str, origin: str | None = None) -> Target:
    """Check that `url` is an http(s) URL the fetcher may request.

    Args:
        url: the URL to request.
        origin: the URL originally asked for, when `url` is a redirect target.

    Raises:
        FetchError: permanent, for other schemes, missing hosts, credentials, bad ports.
    """
    shown = show_url(url) + (f" (redirected from {show_url(origin)})" if origin else "")
    if len(url) > 8192 or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise FetchError(f"refusing to fetch {shown}: the URL is over 8 KB or holds spaces or "
                         "control characters; percent-encode it", permanent=True)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        raise FetchError(f"refusing to fetch {shown}: malformed URL ({e}); check it",
                         permanent=True) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"refusing to fetch {shown}: only http:// and https:// URLs are fetched "
                         f"(got {scheme or 'no'} scheme); serve the model over http(s)",
                         permanent=True)
    if not host:
        raise FetchError(f"refusing to fetch {shown}: the URL has no host", permanent=True)
    if parts.username is not None or parts.password is not None:
        raise FetchError(f"refusing to fetch {shown}: URLs with credentials are refused (they "
                         "would be stored with the verification); use a URL that needs none, "
                         "e.g. a pre-signed link", permanent=True)
    if port == 0:
        raise FetchError(f"refusing to fetch {shown}: port 0 is not a valid port", permanent=True)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, scheme, host.lower(), port or (443 if scheme == "https" else 80), path,
                  shown)


class Deadline:
    """A point in monotonic time; `remaining()` never goes below zero."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds  # the budget, for messages
        self.at = time.monotonic() + seconds  # when it expires

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def capped(self, seconds: float) -> Deadline:
        """A deadline at most `seconds` from now and never later than this one."""
        d = Deadline(min(seconds, self.remaining()))
        d.seconds = min(seconds, self.seconds)
        return d


def default_resolver(host: str, port: int) -> list[str]:
    """All addresses of `host` from the system resolver, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def default_connector(ip: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to exactly `ip`:`port`."""
    return socket.create_connection((ip, port), timeout=timeout)


def resolve_checked(target: Target, policy: FetchPolicy, resolver: Resolver | None,
                    deadline: Deadline) -> list[str]:
    """The addresses of the target's host, each one checked; any forbidden address refuses all.

    Raises:
        FetchError: permanent when an address is forbidden ("refusing to fetch URL: it resolves
            to IP, a private address; …"), transient when the lookup fails or times out.
    """
    resolve = resolver or default_resolver
    box: dict[str, object] = {}

    def lookup() -> None:
        try:
            box["ips"] = list(resolve(target.host, target.port))
        except Exception as e:  # gaierror, UnicodeError, or a stub's own error
            box["error"] = e

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(min(policy.connect_timeout, deadline.remaining()))
    if worker.is_alive():
        raise FetchError(f"could not fetch {target.shown}: looking up {target.host} took longer "
                         f"than {policy.connect_timeout:g} s; retry later", permanent=False)
    if "error" in box:
        raise FetchError(f"could not fetch {target.shown}: cannot resolve host {target.host} "
                         f"({box['error']}); check the URL", permanent=False)
    ips = box.get("ips") or []
    assert isinstance(ips, list)
    if not ips:
        raise FetchError(f"could not fetch {target.shown}: host {target.host} has no address",
                         permanent=False)
    for ip in ips:
        verdict = address_kind(str(ip))
        if verdict is None:
            continue
        kind, allowed_by = verdict
        if (allowed_by == "allow_loopback" and policy.allow_loopback) or (
                allowed_by == "allow_private" and policy.allow_private):
            continue
        raise FetchError(f"refusing to fetch {target.shown}: it resolves to {ip}, "
                         f"{_article(kind)} {kind} address; {_refusal_hint(allowed_by)}",
                         permanent=True)
    return [str(ip) for ip in ips]


class _Watchdog:
    """Shuts a socket down when the deadline passes, unblocking any read in progress."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.fired = False  # True once the deadline cut the connection
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._timer: threading.Timer | None = None

    def arm(self, fd: int) -> None:
        with self._lock:
            self._fd = fd
            self._timer = threading.Timer(self.deadline.remaining(), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            self.fired = True
            try:  # a duplicate descriptor shuts down the shared connection, TLS or not
                s = socket.socket(fileno=os.dup(self._fd))
                try:
                    s.shutdown(socket.SHUT_RDWR)
                finally:
                    s.close()
            except OSError:
                pass

    def disarm(self) -> None:
        """Stop watching; must run before the socket is closed (its fd may be reused)."""
        with self._lock:
            self._fd = None
            if self._timer is not None:
                self._timer.cancel()


class Exchange:
    """One HTTP request and its response over a connection pinned to a checked IP.

    Use as a context manager; `read_body` streams the body with a cap and truncation check.
    """

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                 target: Target, ip: str, watchdog: _Watchdog) -> None:
        self.conn, self.resp, self.target, self.ip = conn, resp, target, ip
        self.watchdog = watchdog
        self.status = resp.status  # HTTP status code
        self.headers = resp.headers  # response headers

    def content_length(self) -> int | None:
        """The declared body length, or None; a malformed or conflicting value is refused."""
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            return None
        if len(values) > 1 or not all(v.isdigit() and len(v) < 20 for v in values):
            raise FetchError(f"could not fetch {self.target.shown}: the server sent an invalid "
                             f"Content-Length {sorted(values)!r}", permanent=True)
        return int(values.pop())

    def read_body(self, max_bytes: int, sink: Callable[[bytes], object]) -> int:
        """Stream the body into `sink`, at most `max_bytes`; returns the byte count.

        Raises:
            FetchError: over the cap (permanent), truncated or cut by the deadline (transient).
        """
        declared = self.content_length()
        total = 0
        try:
            while chunk := self.resp.read1(CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(f"stopped fetching {self.target.shown} at the {max_bytes}"
                                     "-byte cap: the file is larger than the registry accepts; "
                                     "send a smaller model (operators can raise the cap)",
                                     permanent=True)
                sink(chunk)
                if self.watchdog.deadline.expired():
                    break
        except http.client.IncompleteRead:
            pass  # judged below: deadline, or truncation
        except (OSError, http.client.HTTPException) as e:
            if not self.watchdog.fired:
                raise FetchError(f"could not fetch {self.target.shown}: the connection failed "
                                 f"after {total} bytes ({type(e).__name__}); retry later",
                                 permanent=False) from None
        if self.watchdog.fired or self.watchdog.deadline.expired():
            raise self.deadline_error(total)
        if declared is not None and total != declared:
            raise FetchError(f"could not fetch {self.target.shown}: the download was truncated "
                             f"({total} of {declared} bytes arrived); retry later",
                             permanent=False)
        return total

    def deadline_error(self, got: int) -> FetchError:
        return FetchError(f"could not fetch {self.target.shown}: it did not finish within the "
                          f"{self.watchdog.deadline.seconds:g} s time limit ({got} bytes "
                          "arrived); serve it faster or send a smaller file", permanent=False)

    def close(self) -> None:
        self.watchdog.disarm()
        self.conn.close()

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_exchange(method: str, target: Target, policy: FetchPolicy, deadline: Deadline, *,
                  headers: dict[str, str], body: bytes | None = None,
                  resolver: Resolver | None = None, connector: Connector | None = None
                  ) -> Exchange:
    """Send one request to `target` over a guarded connection and read the response head.

    Args:
        method: "GET" or "POST".
        target: from `parse_target`.
        policy: address rules and the connect timeout.
        deadline: the total deadline; a watchdog cuts the connection when it passes.
        headers: request headers (Host is set from the target's host name).
        body: request body, for POST.
        resolver: (host, port) -> IPs; default: the system resolver.
        connector: (ip, port, timeout) -> socket; default: socket.create_connection.

    Returns:
        An Exchange; close it (or use `with`).

    Raises:
        FetchError: refused address (permanent), or network failure / deadline (transient).
    """
    ips = resolve_checked(target, policy, resolver, deadline)
    connect = connector or default_connector
    failure: Exception | None = None
    for ip in ips:
        if deadline.expired():
            break
        watchdog = _Watchdog(deadline)
        conn = _pinned_connection(target, ip, connect, watchdog,
                                  min(policy.connect_timeout, max(deadline.remaining(), 0.001)))
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(max(deadline.remaining(), 0.001))
        except (OSError, http.client.HTTPException) as e:
            watchdog.disarm()
            conn.close()
            failure = e
            if isinstance(e, ssl.SSLCertVerificationError):
                raise FetchError(f"could not fetch {target.shown}: its TLS certificate does not "
                                 f"verify ({e.verify_message}); fix the certificate",
                                 permanent=True) from None
            continue
        try:
            conn.request(method, target.request_path, body=body, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException, ValueError) as e:
            watchdog.disarm()
            conn.close()
            if watchdog.fired or deadline.expired():
                raise FetchError(f"could not fetch {target.shown}: no response within the "
                                 f"{deadline.seconds:g} s time limit; retry later",
                                 permanent=False) from None
            raise FetchError(f"could not fetch {target.shown}: the request failed "
                             f"({type(e).__name__}: {e}); retry later", permanent=False) from None
        return Exchange(conn, resp, target, ip, watchdog)
    if deadline.expired():
        raise FetchError(f"could not fetch {target.shown}: no connection within the "
                         f"{deadline.seconds:g} s time limit; retry later", permanent=False)
    raise FetchError(f"could not fetch {target.shown}: cannot connect to {', '.join(ips)} "
                     f"({type(failure).__name__}: {failure}); retry later", permanent=False)


def _pinned_connection(target: Target, ip: str, connect: Connector, watchdog: _Watchdog,
                       timeout: float) -> http.client.HTTPConnection:
    """An http.client connection whose socket goes to `ip` while Host/SNI stay `target.host`."""
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def create(address: object, timeout: float | None = None,
               source_address: object = None) -> socket.socket:
        sock = connect(ip, target.port, timeout if timeout is not None else 10.0)
        watchdog.arm(sock.fileno())
        return sock

    conn._create_connection = create  # type: ignore[attr-defined]
    return conn
