"""Who may do how much: DRF throttles over the shared cache (settings.CACHES).

Rules encoded here (rates in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], each from an
environment variable):
- `signup`: per client address, anonymous or not.
- `login`: per client address on /api/token and the web login (django-axes adds the lockout
  of one username from one address after repeated failures).
- `submit`: per account; a targeted verification costs 1, an untargeted one (a scan of the
  whole registry) costs HALLMARK_SCAN_COST.
- `suspect_host`: per suspect host name, across all accounts, so the registry cannot be
  used to flood somebody's server.
- `upload`: key and licence uploads per account.
A refused request gets 429 with Retry-After (DRF's Throttled). When the cache is unreachable
the request is refused with 503 and Retry-After, before anything is stored (counting blindly
would lift every limit exactly when the service is degraded). The same classes guard the web
forms through `check`.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from rest_framework.exceptions import Throttled
from rest_framework.throttling import SimpleRateThrottle

from registry.errors import LimiterUnavailable


class _Scoped(SimpleRateThrottle):
    """A rate per scope, counted under a key that subclasses choose; `cost` entries per request."""

    def get_rate(self) -> str | None:
        # Read at each request (not frozen at import as DRF's class attribute is), so an
        # operator's setting and a test's override both apply.
        return settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}).get(self.scope)

    def cost(self, request: Any) -> int:
        return 1

    def ident_of(self, request: Any) -> str | None:
        return self.get_ident(request)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        ident = self.ident_of(request)
        return None if ident is None else self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        try:
            self.history = self.cache.get(self.key, [])
            self.now = self.timer()
            while self.history and self.history[-1] <= self.now - self.duration:
                self.history.pop()
            cost = self.cost(request)
            if len(self.history) + cost > self.num_requests:
                return self.throttle_failure()
            self.history[:0] = [self.now] * cost
            self.cache.set(self.key, self.history, self.duration)
        except Exception as e:  # the cache server is down: neither count blindly nor 500
            raise LimiterUnavailable() from e
        return True


class SignupThrottle(_Scoped):
    scope = "signup"


class LoginThrottle(_Scoped):
    scope = "login"


class UploadThrottle(_Scoped):
    scope = "upload"

    def ident_of(self, request: Any) -> str | None:
        return str(request.user.pk) if request.user.is_authenticated else self.get_ident(request)


class SubmitThrottle(UploadThrottle):
    scope = "submit"

    def cost(self, request: Any) -> int:
        target = _field(request, "target")
        return 1 if target else settings.HALLMARK_SCAN_COST


class SuspectHostThrottle(_Scoped):
    scope = "suspect_host"

    def ident_of(self, request: Any) -> str | None:
        url = _field(request, "url")
        if not isinstance(url, str):
            return None
        try:
            host = urlsplit(url).hostname
        except ValueError:
            return None
        return host[:255] if host else None


def _field(request: Any, name: str) -> Any:
    data = getattr(request, "data", None)
    if data is None:  # a plain Django request (web form)
        data = request.POST
    return data.get(name) if hasattr(data, "get") else None


def check(request: HttpRequest, *throttles: type[_Scoped]) -> None:
    """Apply DRF throttles to a plain Django view; raises Throttled (answered 429 by the caller)."""
    for cls in throttles:
        t = cls()
        if not t.allow_request(request, None):
            raise Throttled(wait=t.wait())
