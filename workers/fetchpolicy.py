"""What the registry's workers may fetch: the policy, the address and URL rules, the error.

`check_address` and `address_kind` judge one IP address; `parse_target` judges one URL. Both
refuse with a permanent `FetchError` whose message names the input and the setting or fix.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

GiB = 1 << 30


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
    why = refusal(ip, policy)
    if why is not None:
        raise FetchError(f"{ip} is {why}", permanent=True)


def refusal(ip: str, policy: FetchPolicy) -> str | None:
    """Why `policy` forbids `ip` ("a private address; <the setting or fix>"), or None if allowed."""
    verdict = address_kind(ip)
    if verdict is None:
        return None
    kind, allowed_by = verdict
    if (allowed_by == "allow_loopback" and policy.allow_loopback) or (
            allowed_by == "allow_private" and policy.allow_private):
        return None
    return f"{_article(kind)} {kind} address; {_refusal_hint(allowed_by)}"


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
