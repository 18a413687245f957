"""A Hub suspect row → a pinned snapshot at fetch, and a verifier Suspect for each check.

`prepare(row)` (the fetch task): resolves the revision to a commit sha once and pins it
(a later fetch uses the pinned sha, never the branch again), chooses the layout, reads what
the layout needs to validate the model — every safetensors header (ranged), or every model
file whole (folder) — and records repo, commit, files used (size, the Hub's claimed LFS
SHA-256, header digests) and the subject digest (`suspect.sha256`).

`load(row)` (each check): a fresh `verifier.Suspect` whose weights are a lazy
`RangedTensors` over this host's cache (ranged), or the folder's loaded model. The headers
are re-read (from the cache, or the network on a new host) and must match the pinned
digests, else `SuspectChanged`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from django.conf import settings

from registry.hubrefs import HubRef, parse_hub_ref
from registry.models import NOT_APPLICABLE, PinnedRange, Suspect
from verifier import Suspect as VerifierSuspect
from verifier.models import ModelFormatError, load_suspect
from verifier.models.ranged import (
    RangedTensors,
    Reader,
    ShardHeader,
    header_evidence,
    read_header,
    subject_digest,
)
from workers.hub.snapshot import INDEX, HubFile, Plan, Snapshot, plan, resolve
from workers.hub.store import HubStore
from workers.netguard import FetchError, FetchPolicy

_INDEX_MAX = 50_000_000  # bytes of model.safetensors.index.json


class SuspectChanged(Exception):
    """The Hub now serves other bytes than those pinned at the suspect's first fetch."""


def _policy() -> FetchPolicy:
    return FetchPolicy(**settings.HALLMARK_FETCH)


def _ref(row: Suspect) -> HubRef:
    ref = parse_hub_ref(row.url)
    if ref is None:
        raise FetchError(f"{row.url} is not a Hub reference", permanent=True)
    if row.hub_commit:  # pinned at the first fetch: never follow the branch again
        ref = HubRef(ref.repo, row.hub_commit, ref.file)
    return ref


def _store(snap: Snapshot) -> HubStore:
    return HubStore(snap, settings.HALLMARK_CACHE_DIR, settings.HALLMARK_HF_ENDPOINT,
                    settings.HALLMARK_HF_TOKEN, _policy(),
                    full_download=settings.HALLMARK_HUB_FULL_DOWNLOAD)


def _open(row: Suspect) -> tuple[Snapshot, Plan, HubStore]:
    ref = _ref(row)
    snap = resolve(ref, settings.HALLMARK_HF_ENDPOINT, settings.HALLMARK_HF_TOKEN, _policy())
    if row.hub_commit and snap.commit != row.hub_commit:
        raise SuspectChanged(f"{ref.repo}@{row.hub_commit[:12]} resolved to commit "
                             f"{snap.commit[:12]}; the Hub no longer serves the pinned commit")
    return snap, plan(snap, ref), _store(snap)


def _shards(p: Plan, store: HubStore) -> tuple[HubFile, ...]:
    """The safetensors files of a ranged plan (the index's shards, for a sharded checkpoint)."""
    if p.index is None:
        return p.files
    if p.index.size > _INDEX_MAX:
        raise ModelFormatError(f"{INDEX} is {p.index.size} bytes, over {_INDEX_MAX}; it "
                               "should list shard names only")
    try:
        index = json.loads(store.whole(p.index).read_bytes())
        names = sorted(set(index["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ModelFormatError(f"{INDEX} of {store.snap.repo} is not a JSON object with a "
                               "weight_map of tensor names to shard files; re-save the "
                               "checkpoint with save_pretrained") from None
    if not names or not all(isinstance(n, str) for n in names):
        raise ModelFormatError(f"{INDEX} of {store.snap.repo} names no shard files")
    return tuple(store.snap.file(n) for n in names)


def _headers(shards: tuple[HubFile, ...], store: HubStore) -> list[ShardHeader]:
    return [read_header(f.name, f.size, store.reader()) for f in shards]


def prepare(row: Suspect) -> None:
    """Resolve, pin and validate a Hub suspect; fills the row's fields (the caller saves).

    Raises:
        FetchError, ModelFormatError or SuspectChanged, with messages naming the fix.
    """
    snap, p, store = _open(row)
    used: list[dict[str, Any]] = []
    if p.mode == "ranged":
        shards = _shards(p, store)
        headers = _headers(shards, store)
        RangedTensors(headers, store.reader())  # refuses a tensor held by two shards
        by_name = {h.file: h for h in headers}
        used = [{**asdict(f), "header_sha256": by_name[f.name].sha256,
                 "header_bytes": by_name[f.name].data_start} for f in shards]
        if p.index is not None:
            used.append(asdict(p.index))
        digest = subject_digest({"headers": {h.file: header_evidence(h) for h in headers},
                                 "tensors": {}})
        fmt = f"safetensors, {len(shards)} shard{'s' * (len(shards) > 1)}, range reads"
        size = sum(f.size for f in shards)
    else:
        loaded = _load_folder(p, store)
        used = [{**asdict(f), "sha256": _verified_sha256(store, f)} for f in p.files]
        digest = subject_digest({"files": {u["name"]: {"sha256": u["sha256"], "size": u["size"]}
                                           for u in used}, "headers": {}, "tensors": {}})
        fmt = f"{loaded.format} (hub)"
        size = sum(f.size for f in p.files)
    if row.sha256 and digest != row.sha256:
        raise SuspectChanged(f"{snap.repo}@{snap.commit[:12]} now reads as {digest[:16]}…, not "
                             f"the {row.sha256[:16]}… pinned at the first fetch")
    row.hub_repo, row.hub_commit, row.hub_files = snap.repo, snap.commit, used
    row.sha256, row.size, row.format = digest, size, fmt[:40]


def _load_folder(p: Plan, store: HubStore):  # type: ignore[no-untyped-def]
    total = sum(f.size for f in p.files)
    if total > store.policy.max_bytes:
        raise FetchError(f"refusing to download {store.snap.repo}: its model files hold {total} "
                         f"bytes, over the {store.policy.max_bytes}-byte cap "
                         "(HALLMARK_FETCH_MAX_BYTES); link one file with /blob/<revision>/<file>",
                         permanent=True)
    for f in p.files:
        store.whole(f)
    folder = store.whole_path(p.files[0].name).parent
    return load_suspect(folder)


def _pinned(row: Suspect) -> tuple[Snapshot, Plan, HubStore]:
    """The snapshot and plan recorded at the first fetch: a check needs no Hub API call."""
    if not row.hub_commit or not row.hub_files:
        raise FetchError(f"the Hub suspect {row.url} was not fetched yet; retry later",
                         permanent=False)
    files = tuple(HubFile(u["name"], int(u["size"]), u.get("claimed_sha256", ""))
                  for u in row.hub_files)
    snap = Snapshot(row.hub_repo, row.hub_commit, files)
    ranged = tuple(f for f, u in zip(files, row.hub_files, strict=True) if "header_sha256" in u)
    p = Plan("ranged", ranged, None) if ranged else Plan("folder", files, None)
    return snap, p, _store(snap)


def load(row: Suspect) -> VerifierSuspect:
    """A fresh verifier Suspect for one check (weights read lazily by range when ranged).

    Reads only what the first fetch pinned (the commit, the files used); another host reads
    them itself and must find the same header digests (ranged) or file digests (folder).

    Raises:
        FetchError, ModelFormatError or SuspectChanged.
    """
    snap, p, store = _pinned(row)
    where = f"{snap.repo}@{snap.commit[:12]}"
    if p.mode != "ranged":
        for f, u in zip(p.files, row.hub_files, strict=True):
            if _verified_sha256(store, f) != u["sha256"]:
                raise SuspectChanged(f"{f.name} in {where} no longer has the SHA-256 pinned at "
                                     "the first fetch; submit the repo again")
        return _load_path(str(store.whole_path(p.files[0].name).parent)).suspect.fresh()
    headers = _headers(p.files, store)
    pinned = {u["name"]: u.get("header_sha256") for u in row.hub_files}
    for h in headers:
        if pinned.get(h.file) != h.sha256:
            raise SuspectChanged(f"the header of {h.file} in {where} now has SHA-256 "
                                 f"{h.sha256[:16]}…, not the one pinned at the first fetch; "
                                 "submit the repo again")
    weights = RangedTensors(headers, _pinning(row, store))
    return VerifierSuspect(weights, None, description=f"{where} (safetensors, range reads)")


def _pinning(row: Suspect, store: HubStore) -> Reader:
    """The store's reader, pinning each tensor range read: the first read of a range by any
    check on any host records its SHA-256, every later read must find the same.

    Raises (from a read, so inside the scheme's test; the check is recorded as an error and the
    verdict cannot attribute): SuspectChanged naming the range.
    """
    def read(file: str, begin: int, end: int) -> bytes:
        data = store.read(file, begin, end)
        digest = hashlib.sha256(data).hexdigest()
        pin, _ = PinnedRange.objects.get_or_create(suspect=row, file=file, begin=begin, end=end,
                                                   defaults={"sha256": digest})
        if pin.sha256 != digest:
            raise SuspectChanged(f"bytes {begin}-{end - 1} of {file} in {store.snap.repo}@"
                                 f"{store.snap.commit[:12]} read {digest[:16]}… here, not the "
                                 f"{pin.sha256[:16]}… read first; the Hub served other bytes "
                                 "for the same commit: submit the repo again")
        return data

    return read


def _verified_sha256(store: HubStore, f: HubFile) -> str:
    """The file's SHA-256 (downloaded if missing), hashed once per process per cached file."""
    path = store.whole(f)
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=2)
def _load_path(folder: str):  # type: ignore[no-untyped-def]
    """A downloaded folder's model, loaded once per process (an ONNX session is costly)."""
    return load_suspect(folder)


def with_reads(fields: dict[str, Any], suspect: VerifierSuspect) -> dict[str, Any]:
    """A check's result fields plus, for range-read weights, what the check read ("read":
    header and per-tensor digests, bytes read of bytes held), for the report's evidence.

    A black-box check on range-read weights says why it could not run: the repo has no safe
    runnable format (only ONNX models are run; safetensors hold weights, not a program).
    """
    weights = suspect.weights if suspect.has_weights else None
    if not isinstance(weights, RangedTensors):
        return fields
    details = {**dict(fields.get("details") or {}), "read": weights.evidence()}
    if fields.get("status") == NOT_APPLICABLE and not suspect.has_predict:
        details["reason"] = ("not applicable: no safe runnable format (the repo holds "
                             "safetensors weights only; the registry runs ONNX models only). "
                             + str(details.get("reason", "")))
    return {**fields, "details": details}
