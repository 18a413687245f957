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

No Django, no Celery: the caller passes a `FetchPolicy`. The policy, the address and URL
rules and `FetchError` live in `workers.fetchpolicy`; the pinned connection, `Exchange` and
`Deadline` in `workers.httpconn`. This module resolves, checks and connects, and re-exports
both, so callers import everything from here.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections.abc import Callable

from workers.fetchpolicy import (
    FetchError,
    FetchPolicy,
    GiB,
    Target,
    address_kind,
    check_address,
    parse_target,
    refusal,
    show_url,
)
from workers.httpconn import (
    CHUNK,
    Connector,
    Deadline,
    Exchange,
    Watchdog,
    default_connector,
    pinned_connection,
)

__all__ = ["CHUNK", "Connector", "Deadline", "Exchange", "FetchError", "FetchPolicy", "GiB",
           "Resolver", "Target", "address_kind", "check_address", "default_connector",
           "default_resolver", "open_exchange", "parse_target", "resolve_checked", "show_url"]

Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP address strings


def default_resolver(host: str, port: int) -> list[str]:
    """All addresses of `host` from the system resolver, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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
        why = refusal(str(ip), policy)
        if why is not None:
            raise FetchError(f"refusing to fetch {target.shown}: it resolves to {ip}, {why}",
                             permanent=True)
    return [str(ip) for ip in ips]


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
        watchdog = Watchdog(deadline)
        conn = pinned_connection(target, ip, connect, watchdog,
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
