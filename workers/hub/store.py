"""This host's cache of one Hub repo at one commit: byte ranges and whole files, read once.

A commit sha names the repo's content, so the cache is keyed by content: everything read of
`repo@commit` lives under `cache_dir/hub/<sha256("repo@commit")>/`:
- `ranges/<sha256(file)>-<begin>-<end>`: bytes [begin, end) of a file, as read by range;
- `files/<path>`: whole files (the folder layouts, and safetensors files when the server
  ignores Range or `HALLMARK_HUB_FULL_DOWNLOAD` is set), each checked against the Hub's
  claimed LFS SHA-256 when it gives one.
Children of one host take a file lock on the repo folder while they fill a miss, so the same
bytes cross the network once per host. Writes go to a temp file and are renamed into place,
so the cache holds only complete reads.

`HubStore.reader()` is a `verifier.models.ranged.Reader` over this cache.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from verifier.models.ranged import Reader
from workers.hub.ranges import RangeIgnored, download, get_range
from workers.hub.snapshot import HubFile, Snapshot, resolve_url
from workers.netguard import FetchError, FetchPolicy


class HubStore:
    """Reads of one `repo@commit` through this host's cache (see the module docstring)."""

    def __init__(self, snap: Snapshot, cache_dir: Path, endpoint: str, token: str | None,
                 policy: FetchPolicy, *, full_download: bool = False) -> None:
        self.snap, self.endpoint, self.token, self.policy = snap, endpoint, token, policy
        self.full_download = full_download  # whole files instead of ranges
        key = hashlib.sha256(f"{snap.repo}@{snap.commit}".encode()).hexdigest()
        self.root = Path(cache_dir) / "hub" / key
        (self.root / "ranges").mkdir(parents=True, exist_ok=True)
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        self.downloaded: list[str] = []  # files this store downloaded whole (for the report)

    def url(self, name: str) -> str:
        return resolve_url(self.endpoint, self.snap.repo, self.snap.commit, name)

    def reader(self) -> Reader:
        return self.read

    def read(self, name: str, begin: int, end: int) -> bytes:
        """Bytes [begin, end) of file `name` at the commit (b"" for an empty range).

        Raises:
            FetchError: as `get_range` / `download` (one range or a whole download over the
                cap, a claimed digest that does not match, refused addresses).
        """
        if end <= begin:
            return b""
        if end - begin > self.policy.max_bytes:
            raise FetchError(f"refusing to read bytes {begin}-{end - 1} of {name} in "
                             f"{self.snap.repo}: one read of {end - begin} bytes is over the "
                             f"{self.policy.max_bytes}-byte cap (HALLMARK_FETCH_MAX_BYTES); "
                             "operators can raise the cap", permanent=True)
        whole = self.whole_path(name)
        if whole.is_file():
            return _slice(whole, begin, end)
        cached = self.root / "ranges" / f"{_name_key(name)}-{begin}-{end}"
        if cached.is_file():
            return cached.read_bytes()
        with self._locked():
            if cached.is_file():
                return cached.read_bytes()
            if not self.full_download:
                try:
                    data = get_range(self.url(name), begin, end, self.policy, token=self.token)
                except RangeIgnored:
                    self.full_download = True  # this server never will: whole files from now
                else:
                    _atomic_write(cached, data)
                    return data
            return _slice(self._fetch_whole(self.snap.file(name)), begin, end)

    def whole_path(self, name: str) -> Path:
        return self.root / "files" / name

    def whole(self, f: HubFile) -> Path:
        """The whole file `f` in this host's cache, downloaded (once) if missing."""
        path = self.whole_path(f.name)
        if path.is_file():
            return path
        with self._locked():
            return path if path.is_file() else self._fetch_whole(f)

    def _fetch_whole(self, f: HubFile) -> Path:
        path = self.whole_path(f.name)
        if path.is_file():
            return path
        if f.size > self.policy.max_bytes:
            raise FetchError(f"refusing to download {f.name} of {self.snap.repo} whole: it is "
                             f"{f.size} bytes, over the {self.policy.max_bytes}-byte cap "
                             "(HALLMARK_FETCH_MAX_BYTES); the server does not answer Range "
                             "requests, so only files under the cap can be checked",
                             permanent=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                def sink(chunk: bytes) -> None:
                    digest.update(chunk)
                    out.write(chunk)

                download(self.url(f.name), self.policy, sink, token=self.token)
            if f.claimed_sha256 and digest.hexdigest() != f.claimed_sha256:
                raise FetchError(f"{f.name} of {self.snap.repo}@{self.snap.commit[:12]} has "
                                 f"SHA-256 {digest.hexdigest()[:16]}…, but the Hub lists "
                                 f"{f.claimed_sha256[:16]}… for it; the server changed the "
                                 "file: submit the repo again", permanent=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.downloaded.append(f.name)
        return path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another child of this host may be reading it
            yield
        finally:
            os.close(fd)


def _name_key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def _slice(path: Path, begin: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(begin)
        return f.read(end - begin)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
