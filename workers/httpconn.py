"""One HTTP exchange over a connection pinned to a checked IP, under a total deadline.

The connection goes to exactly the IP the caller checked while the Host header and TLS SNI /
certificate check use the URL's host name; a watchdog shuts the socket down when the deadline
passes (a server that dribbles one byte per second is cut off); bodies are read with a byte
cap and refused when truncated. Which IPs may be used is decided in `workers.netguard`.
"""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from types import TracebackType

from workers.fetchpolicy import FetchError, Target

CHUNK = 1 << 20  # bytes per read: one recv of what the socket holds, fewer Python calls
Connector = Callable[[str, int, float], socket.socket]  # (ip, port, timeout) -> connected socket


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


def default_connector(ip: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to exactly `ip`:`port`."""
    return socket.create_connection((ip, port), timeout=timeout)


class Watchdog:
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
                 target: Target, ip: str, watchdog: Watchdog) -> None:
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


def pinned_connection(target: Target, ip: str, connect: Connector, watchdog: Watchdog,
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
