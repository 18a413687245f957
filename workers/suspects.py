"""Turning a Suspect row into something a scheme can test: fetch, validate, load (cached)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from registry.models import ENDPOINT, Suspect
from verifier import Suspect as VerifierSuspect
from verifier.models import load_suspect
from workers.fetcher import FetchPolicy, fetch
from workers.oip import oip_suspect


def policy() -> FetchPolicy:
    return FetchPolicy(**settings.HALLMARK_FETCH)


def _cache_path(sha256: str) -> Path:
    return settings.HALLMARK_CACHE_DIR / "sha256" / sha256


def prepare(suspect: Suspect) -> None:
    """Fetch the suspect into the content-addressed cache and check that it loads.

    Raises FetchError or ModelFormatError (typed, with a message naming the fix); on error
    nothing is cached and the row is unchanged.
    """
    if suspect.kind == ENDPOINT:
        suspect.format = "oip-v2 endpoint"
    else:
        fetched = fetch(suspect.url, policy(), settings.HALLMARK_CACHE_DIR)
        loaded = _load_file(str(fetched.path))
        suspect.sha256, suspect.size, suspect.format = fetched.sha256, fetched.size, loaded.format
    suspect.fetched_at = timezone.now()
    suspect.save(update_fields=["sha256", "size", "format", "fetched_at"])


@lru_cache(maxsize=2)
def _load_file(path: str):  # type: ignore[no-untyped-def]
    return load_suspect(path)


def load(suspect: Suspect) -> VerifierSuspect:
    """A fresh verifier Suspect (query counter at zero) for one check."""
    if suspect.kind == ENDPOINT:
        return oip_suspect(suspect.url, policy(), rate_per_second=settings.HALLMARK_ENDPOINT_RATE,
                           max_queries=settings.HALLMARK_ENDPOINT_MAX_QUERIES)
    return _load_file(str(_cache_path(suspect.sha256))).suspect.fresh()
