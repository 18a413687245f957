"""Submitting a suspect URL: validate, record, and enqueue one verification canvas."""
from __future__ import annotations

from urllib.parse import urlsplit

from django.db import transaction

from registry import errors
from registry.celery_app import enqueue
from registry.hubrefs import HubRefError, is_hub_url, parse_hub_ref
from registry.models import (
    ENDPOINT,
    FILE,
    HUB,
    QUEUED,
    Owner,
    RegisteredModel,
    Suspect,
    Verification,
)

# An Open Inference Protocol v2 endpoint URL: .../v2/models/<name> (optionally /infer).
_OIP_MARKER = "/v2/models/"


def suspect_kind(url: str) -> str:
    """"hub" for a Hugging Face Hub repo, "endpoint" for an OIP v2 model URL, else "file"."""
    if is_hub_url(url):
        return HUB
    return ENDPOINT if _OIP_MARKER in urlsplit(url).path else FILE


def validate_url(url: str) -> str:
    """Accept Hub references (registry.hubrefs) and absolute http(s) URLs with a host; the
    fetcher re-checks every address."""
    url = url.strip()
    try:
        if parse_hub_ref(url) is not None:
            return url
    except HubRefError as e:
        raise errors.BadSuspectURL(str(e)) from None
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise errors.BadSuspectURL(
            f"refusing suspect URL {url[:200]!r}: it contains spaces or control characters; "
            "percent-encode them (%20, %0A)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port outside 0-65535)
    except ValueError as e:
        raise errors.BadSuspectURL(f"refusing suspect URL {url[:200]!r}: {e}; check the host "
                                   "and port") from None
    if parts.scheme not in ("http", "https"):
        raise errors.BadSuspectURL(
            f"refusing suspect URL {url!r}: scheme {parts.scheme or '(none)'!r} is not allowed; "
            "publish the model over http:// or https:// (or give a Hugging Face repo as "
            "hf://org/name) and submit that URL")
    if not parts.hostname:
        raise errors.BadSuspectURL(f"refusing suspect URL {url[:200]!r}: it has no host name")
    return url


def submit(owner: Owner, url: str, target: RegisteredModel | None = None,
           publisher_keys: list[str] | None = None) -> Verification:
    """Create the suspect and its verification, and enqueue the fetch once committed.

    `publisher_keys` (EC public key PEMs, validated by the serializer) are tried on the
    suspect's model-signing bundle beside the key shipped in it (docs/evidence.md).

    The row is the request: when the broker is down the send fails, the row is marked
    (driven_at = null) and the sweeper sends the fetch once the broker is back, so the client
    still gets its verification (202) and never a 500 or a reason to submit twice.
    """
    url = validate_url(url)
    with transaction.atomic():
        suspect = Suspect.objects.create(url=url, kind=suspect_kind(url))
        v = Verification.objects.create(suspect=suspect, requested_by=owner, target=target,
                                        publisher_keys=list(publisher_keys or []))
        transaction.on_commit(lambda: _send_fetch(v))
    return v


def _send_fetch(v: Verification) -> None:
    if not enqueue("workers.fetch", v.pk):
        Verification.objects.filter(pk=v.pk, status=QUEUED).update(driven_at=None)
