"""Hashing near hashlib's speed: the fetch path (workers.fetcher over loopback, cache write and
fsync included) and local re-hashing (`hallmark audit --suspect`), against hashlib SHA-256 on
one thread over the same file, and model-signing 1.1.1's shard mode (all cores), interleaved,
medians of per-round ratios.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SCRATCH = Path(os.environ.get("HALLMARK_PERFBENCH_DIR", "/tmp/perfbench")) / "hash"


def _say(msg: str) -> None:
    print(f"[perf hash] {msg}", file=sys.stderr, flush=True)


def _hashlib(path: Path) -> float:
    """Seconds for SHA-256 of the file on one thread, 1 MiB reads (the reference)."""
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return time.perf_counter() - t0


def _audit_digest(path: Path) -> float:
    """Seconds for `hallmark audit --suspect`'s digest check of the file."""
    from verifier.audit.reveal import RevealChecks

    state = _Digest(path)
    t0 = time.perf_counter()
    RevealChecks.check_suspect_digest(state)  # type: ignore[arg-type]
    return time.perf_counter() - t0


class _Digest:
    """The attributes check_suspect_digest reads (a file suspect: no Hub evidence)."""

    def __init__(self, path: Path) -> None:
        self.pred: dict[str, object] = {}
        self.suspect_path = str(path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self.statement = {"subject": [{"digest": {"sha256": h.hexdigest()}}]}


def _model_signing(path: Path) -> float:
    """Seconds for model-signing 1.1.1's shard-mode SHA-256 manifest of the file (all cores)."""
    from model_signing import hashing

    t0 = time.perf_counter()
    hashing.Config().use_shard_serialization(hashing_algorithm="sha256").hash(path)
    return time.perf_counter() - t0


class _Files(BaseHTTPRequestHandler):
    root: Path

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.root / self.path.lstrip("/")
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        with open(path, "rb") as f:
            self.wfile.flush()
            self.connection.sendfile(f)  # zero copy: the server costs little CPU

    def log_message(self, *args: object) -> None:
        pass


def _fetch(url: str, cache: Path) -> float:
    from workers.fetcher import FetchPolicy, fetch

    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    fetch(url, FetchPolicy(allow_loopback=True, max_bytes=1 << 40, timeout_seconds=600), cache)
    seconds = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    return seconds


def run(gib: float = 1.0, rounds: int = 3) -> dict[str, Any]:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / "suspect.bin"
    size = int(gib * (1 << 30))
    with open(path, "wb") as f:  # incompressible bytes, written in 64 MiB blocks
        for _ in range(size // (64 << 20)):
            f.write(os.urandom(64 << 20))
    _Files.root = SCRATCH
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/suspect.bin"
    runs: dict[str, list[float]] = {"hashlib": [], "fetch": [], "audit": [], "model_signing": []}
    try:
        for i in range(rounds):
            runs["hashlib"].append(_hashlib(path))
            runs["fetch"].append(_fetch(url, SCRATCH / "cache"))
            runs["audit"].append(_audit_digest(path))
            runs["model_signing"].append(_model_signing(path))
            _say(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items()))
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(SCRATCH, ignore_errors=True)

    def speed_vs(name: str, reference: str) -> float:
        """Median over rounds of (reference seconds / name seconds): >1 means `name` is faster."""
        return round(statistics.median(r / s for r, s in zip(runs[reference], runs[name],
                                                               strict=True)), 2)

    med = {k: round(statistics.median(v), 3) for k, v in runs.items()}
    gbps = {k: round(size / v / 1e9, 3) for k, v in med.items()}
    out = {"bytes": size, "rounds": rounds, "median_seconds": med, "GB_per_s": gbps,
           "fetch_vs_hashlib": speed_vs("fetch", "hashlib"),
           "audit_vs_hashlib": speed_vs("audit", "hashlib"),
           "audit_vs_model_signing": speed_vs("audit", "model_signing"),
           "cores": os.cpu_count(), "runs": runs}
    out["summary"] = [
        f"fetch of {size / (1 << 30):.2f} GiB over loopback (hash + cache write + fsync): "
        f"{gbps['fetch']} GB/s = {out['fetch_vs_hashlib']}x hashlib one thread "
        f"({gbps['hashlib']} GB/s) (goal >= 0.9x)",
        f"local re-hash (audit --suspect, plain SHA-256): {out['audit_vs_model_signing']}x "
        f"model-signing 1.1.1 shard mode ({gbps['model_signing']} GB/s, {os.cpu_count()} cores) "
        f"(goal >= 1x); {out['audit_vs_hashlib']}x hashlib"]
    return out


if __name__ == "__main__":
    result = run(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0,
                 int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    print("\n".join(result["summary"]))
