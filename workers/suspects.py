"""Turning a Suspect row into something a scheme can test: fetch, validate, load (cached).

Hosts share no filesystem: each keeps its own content-addressed cache under
$HALLMARK_DATA_DIR. The first fetch records the suspect's SHA-256; any later fetch (a check on
another host, a redelivered fetch) must find the same bytes, or `SuspectChanged` is raised and
the verification fails with nothing signed. A host downloads a suspect at most once: its
children take a per-host file lock, and the second one finds the file the first one stored.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from registry.models import ENDPOINT, HUB, Owner, Suspect
from verifier import Suspect as VerifierSuspect
from verifier import provenance as declared
from verifier.models import ModelFormatError, load_suspect
from workers import hub
from workers.fetcher import Fetched, FetchPolicy, fetch
from workers.oip import oip_suspect


class SuspectChanged(Exception):
    """The URL now serves other bytes than those pinned at the suspect's first fetch."""


def policy() -> FetchPolicy:
    return FetchPolicy(**settings.HALLMARK_FETCH)


def _cache_path(sha256: str) -> Path:
    return settings.HALLMARK_CACHE_DIR / "sha256" / sha256


def prepare(suspect: Suspect) -> None:
    """Fetch the suspect into this host's cache, pin its digest and check that it loads.

    Raises FetchError, ModelFormatError or SuspectChanged (typed, with a message naming the
    fix); on error the row is unchanged.
    """
    if suspect.kind == ENDPOINT:
        suspect.format = "oip-v2 endpoint"
    elif suspect.kind == HUB:
        with _hub_changes():
            hub.prepare(suspect)
    else:
        fetched = _fetch_pinned(suspect)
        loaded = _load_file(str(fetched.path))
        suspect.sha256, suspect.size, suspect.format = fetched.sha256, fetched.size, loaded.format
    suspect.fetched_at = suspect.fetched_at or timezone.now()  # the first sighting stays first
    suspect.save(update_fields=["sha256", "size", "format", "fetched_at", "hub_repo",
                                "hub_commit", "hub_files"])


@contextmanager
def _hub_changes() -> Iterator[None]:
    """A Hub suspect that changed since its first fetch fails like a changed URL."""
    try:
        yield
    except hub.SuspectChanged as e:
        raise SuspectChanged(f"the suspect changed since it was first fetched: {e}; nothing "
                             "was signed. Submit it again to verify what it serves now") from None


def _fetch_pinned(suspect: Suspect) -> Fetched:
    fetched = fetch(suspect.url, policy(), settings.HALLMARK_CACHE_DIR)
    if suspect.sha256 and fetched.sha256 != suspect.sha256:
        if not fetched.cached:
            fetched.path.unlink(missing_ok=True)
        raise SuspectChanged(
            f"the suspect changed since it was first fetched: {suspect.url} now serves "
            f"{fetched.size} bytes with SHA-256 {fetched.sha256[:16]}…, not the {suspect.size} "
            f"bytes with SHA-256 {suspect.sha256[:16]}… checked at the first fetch; nothing was "
            "signed. Submit the URL again to verify what it serves now")
    return fetched


def local_file(suspect: Suspect) -> Path:
    """The suspect's file in this host's cache, fetched (once per host, pinned) if missing.

    Raises FetchError or SuspectChanged.
    """
    path = _cache_path(suspect.sha256)
    if path.is_file():
        return path
    locks = settings.HALLMARK_CACHE_DIR / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / suspect.sha256, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another child of this host may be downloading it
        if not path.is_file():
            _fetch_pinned(suspect)
    finally:
        os.close(fd)  # releases the lock
    return path


@lru_cache(maxsize=2)
def _load_file(path: str):  # type: ignore[no-untyped-def]
    return load_suspect(path)


def load(suspect: Suspect) -> VerifierSuspect:
    """A fresh verifier Suspect (query counter at zero) for one check."""
    if suspect.kind == HUB:
        with _hub_changes():
            return hub.load(suspect)
    if suspect.kind == ENDPOINT:
        return oip_suspect(suspect.url, policy(), rate_per_second=settings.HALLMARK_ENDPOINT_RATE,
                           max_queries=settings.HALLMARK_ENDPOINT_MAX_QUERIES)
    return _load_file(str(local_file(suspect))).suspect.fresh()


def _owner_key(keyid: str) -> bytes | None:
    """A registered owner's Ed25519 public key, by keyid (pins ONNX graph signatures)."""
    key = Owner.objects.filter(keyid=keyid).values_list("public_key", flat=True).first()
    return None if key is None else bytes(key)


def provenance(suspect: Suspect, publisher_keys: Sequence[str] = ()) -> dict[str, object]:
    """The suspect's declared provenance (`verifier.provenance`), for the report.

    Checked on this host's pinned copy, after `prepare`; the verifying keys are the publisher
    keys named in the request and the one shipped in the suspect (model-signing), and the
    registered owners' keys (graph signatures). A refusal cannot happen after `prepare`
    accepted the same bytes, but would be recorded in the section rather than fail the
    verification: provenance never decides it. A Hub repository is read by byte ranges, so
    its publisher signatures are not checked (reported absent, with the reason).

    Raises FetchError or SuspectChanged (from fetching this host's copy).
    """
    if suspect.kind == ENDPOINT:
        return declared.absent("an inference endpoint carries no files to check")
    if suspect.kind == HUB:
        return declared.absent("a Hugging Face Hub repository is read by byte ranges; "
                               "publisher signatures are checked only on file suspects")
    try:
        named = [declared.CandidateKey(pem.encode(), "named in the request")
                 for pem in publisher_keys]
        return declared.check_provenance(local_file(suspect), owner_key=_owner_key,
                                         publisher_keys=named)
    except ModelFormatError as e:
        return declared.absent(f"the suspect's files could not be opened again: {e}")
