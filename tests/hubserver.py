"""A loopback Hugging Face Hub look-alike for tests and benchmarks: a real HTTP server.

Two servers on 127.0.0.1:
- the **Hub**: the API route `huggingface_hub.HfApi.model_info` calls
  (`GET /api/models/<org>/<name>/revision/<rev>[?blobs=true]`: id, commit sha, siblings with
  sizes and LFS digests) and `resolve` URLs (`GET|HEAD /<org>/<name>/resolve/<rev>/<file>`),
  which answer 302 to the CDN with the Hub's headers (X-Repo-Commit, X-Linked-Etag,
  X-Linked-Size, ETag);
- the **CDN**: `GET /blobs/<org>/<name>/<commit>/<file>`, answering single `Range: bytes=a-b`
  requests with 206 and Content-Range, unless `ignore_range` is set (then 200 and the whole
  file, like a server without Range support).

Switches: `ignore_range`; `private_redirect` (resolve redirects to 10.255.255.1, a private
address the fetcher must refuse before connecting); `token` (the repo answers 401 to requests
without `Authorization: Bearer <token>`, like a gated repo). Counters `bytes_served` and
`requests` let tests and benchmarks see what was read.

Repos are folders `root/<org>/<name>/`; a repo's commit sha is SHA-1 over its file names and
sizes (stable while the files stay), and revisions "main" and the sha itself resolve to it.

Example:
    >>> with HubServer(tmp_path) as hub:
    ...     hub.endpoint  # give this to HF_ENDPOINT / HALLMARK_HF_ENDPOINT
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

PRIVATE_HOST = "10.255.255.1"  # where `private_redirect` points; never connected to


class HubServer:
    """The Hub and its CDN on loopback; use as a context manager."""

    def __init__(self, root: Path, *, hash_files: bool = True) -> None:
        self.root = Path(root)  # repos live in root/<org>/<name>/
        self.hash_files = hash_files  # send LFS sha256 (off for huge sparse bench repos)
        self.ignore_range = False  # CDN answers 200 with the whole file to Range requests
        self.private_redirect = False  # resolve redirects to a private address
        self.token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
        self.bytes_served = 0  # body bytes the CDN sent
        self.requests: list[str] = []  # "<server> <method> <path> <range>" per request
        self._lock = threading.Lock()
        self._digests: dict[tuple[str, int, float], str] = {}
        self.cdn = _serve(self, _CdnHandler)
        self.hub = _serve(self, _HubHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_base(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def repo_dir(self, repo: str) -> Path:
        return self.root / repo

    def commit(self, repo: str) -> str:
        """The repo's commit sha (40 hex)."""
        h = hashlib.sha1(repo.encode())
        for f in self.files(repo):
            h.update(f"{f}\0{(self.repo_dir(repo) / f).stat().st_size}\0".encode())
        return h.hexdigest()

    def files(self, repo: str) -> list[str]:
        base = self.repo_dir(repo)
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def sha256(self, path: Path) -> str:
        st = path.stat()
        k = (str(path), st.st_size, st.st_mtime)
        if k not in self._digests:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            self._digests[k] = h.hexdigest()
        return self._digests[k]

    def note(self, line: str) -> None:
        with self._lock:
            self.requests.append(line)

    def count(self, sent: int) -> None:
        with self._lock:
            self.bytes_served += sent

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_served = 0

    def close(self) -> None:
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hubserver: HubServer


def _serve(hub: HubServer, handler: type[http.server.BaseHTTPRequestHandler]) -> _Server:
    server = _Server(("127.0.0.1", 0), handler)
    server.hubserver = hub
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Base(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    @property
    def hubs(self) -> HubServer:
        return self.server.hubserver

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None,
                ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, error_code: str, message: str) -> None:
        self._answer(code, json.dumps({"error": message}).encode(),
                     {"X-Error-Code": error_code, "X-Error-Message": message})

    def _authorized(self) -> bool:
        token = self.hubs.token
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._error(401, "GatedRepo", "Access to this repo is restricted; pass a token")
        return False

    def _repo(self, org: str, name: str) -> str | None:
        repo = f"{org}/{name}"
        if not self.hubs.repo_dir(repo).is_dir():
            self._error(404, "RepoNotFound", f"Repository {repo} not found")
            return None
        return repo


class _HubHandler(_Base):
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        auth = " with-token" if self.headers.get("Authorization") else ""
        self.hubs.note(f"hub {self.command} {path}{auth}")
        m = re.fullmatch(r"/api/models/([^/]+)/([^/]+)(?:/revision/(.+))?", path)
        if m:
            org, name, rev = (unquote(g) if g else "main" for g in m.groups())
            return self._model_info(org, name, rev)
        m = re.fullmatch(r"/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve(*[unquote(g) for g in m.groups()])
        self._error(404, "EntryNotFound", f"no route {path}")

    def _revision(self, repo: str, revision: str) -> str | None:
        sha = self.hubs.commit(repo)
        if revision not in ("main", sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return sha

    def _model_info(self, org: str, name: str, revision: str) -> None:
        if not self._authorized() or (repo := self._repo(org, name)) is None:
            return
        if (sha := self._revision(repo, revision)) is None:
            return
        siblings = []
        for f in self.hubs.files(repo):
            p = self.hubs.repo_dir(repo) / f
            entry: dict[str, object] = {"rfilename": f, "size": p.stat().st_size,
                                        "blobId": hashlib.sha1(f.encode()).hexdigest()}
            if self.hubs.hash_files:
                entry["lfs"] = {"size": p.stat().st_size, "sha256": self.hubs.sha256(p),
                                "pointerSize": 134}
            siblings.append(entry)
        body = {"id": repo, "modelId": repo, "sha": sha, "private": False,
                "gated": self.hubs.token is not None and "manual", "siblings": siblings}
        self._answer(200, json.dumps(body).encode())

    def _resolve(self, org: str, name: str, revision: str, file: str) -> None:
        if not self._authorized() or (repo := self._repo(org, name)) is None:
            return
        if (sha := self._revision(repo, revision)) is None:
            return
        p = self.hubs.repo_dir(repo) / file
        if file not in self.hubs.files(repo):
            self._error(404, "EntryNotFound", f"{file} does not exist at {revision}")
            return
        host = f"http://{PRIVATE_HOST}:80" if self.hubs.private_redirect else self.hubs.cdn_base
        headers = {"Location": f"{host}/blobs/{repo}/{sha}/{quote(file)}", "X-Repo-Commit": sha,
                   "X-Linked-Size": str(p.stat().st_size)}
        if self.hubs.hash_files:
            headers["X-Linked-Etag"] = f'"{self.hubs.sha256(p)}"'
        self._answer(302, b"", headers, ctype="text/plain")


class _CdnHandler(_Base):
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        rng = self.headers.get("Range", "")
        auth = " with-token" if self.headers.get("Authorization") else ""
        self.hubs.note(f"cdn GET {path}{auth} {rng}")
        m = re.fullmatch(r"/blobs/([^/]+)/([^/]+)/([0-9a-f]{40})/(.+)", path)
        if not m:
            return self._error(404, "EntryNotFound", f"no blob {path}")
        repo = f"{unquote(m[1])}/{unquote(m[2])}"
        p = self.hubs.repo_dir(repo) / unquote(m[4])
        if not p.is_file():
            return self._error(404, "EntryNotFound", f"no blob {path}")
        size = p.stat().st_size
        begin, end = 0, size  # end exclusive
        code, headers = 200, {"Accept-Ranges": "bytes", "ETag": f'"{m[3]}"'}
        rm = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
        if rng and not self.hubs.ignore_range:
            if not rm or int(rm[1]) >= size:
                return self._answer(416, b"", {"Content-Range": f"bytes */{size}"})
            begin = int(rm[1])
            end = min(size, int(rm[2]) + 1) if rm[2] else size
            code = 206
            headers["Content-Range"] = f"bytes {begin}-{end - 1}/{size}"
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - begin))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            with open(p, "rb") as f:
                _copy(f, self.wfile, begin, end, self.hubs.count)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (a cap, or a refused full body)


def _copy(f: BinaryIO, out: io.BufferedIOBase, begin: int, end: int, count: Callable[[int], None]) -> None:
    """Send bytes [begin, end) of `f`, counting each chunk BEFORE it is written: once the client
    has every byte, the counter already says so (no race with the test reading it)."""
    f.seek(begin)
    left = end - begin
    while left > 0:
        chunk = f.read(min(1 << 20, left))
        if not chunk:
            break
        count(len(chunk))
        out.write(chunk)
        left -= len(chunk)


def write_sharded(folder: Path, tensors: dict[str, object], shards: int) -> list[str]:
    """Save `tensors` as a sharded safetensors checkpoint (model-0000i-of-0000N.safetensors and
    model.safetensors.index.json, as `save_pretrained` writes); returns the shard names."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    groups = [names[i::shards] for i in range(shards)]
    files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {}
    for group, file in zip(groups, files, strict=True):
        save_file({n: tensors[n].contiguous() for n in group}, str(folder / file),  # type: ignore[attr-defined]
                  metadata={"format": "pt"})
        weight_map.update({n: file for n in group})
    total = sum((folder / f).stat().st_size for f in files)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    return files
