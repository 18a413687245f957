"""Peak memory of the web process under oversized uploads (issue: a 300 MB key upload was read
whole before the cap was checked).

    python -m bench.upload_memory [--quick]

Starts gunicorn (one sync worker, SQLite, a temporary data folder) on 127.0.0.1, signs up,
registers a model, then streams key uploads from a generator (the client never holds them)
and reads the worker's peak resident set (VmHWM) around each:
- a body over the cap, honest Content-Length: refused 413 before it is read;
- a file just under the cap that is not a key: read, refused 400;
and reports each peak's growth beside the file size and the cap.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import machine

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc status")


def _reset_hwm(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _request(port: int, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        # the server may answer before reading everything: then read its answer
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw.startswith((b"{", b"[")) else {}
    finally:
        conn.close()


def _stream(size: int) -> tuple[bytes, Any, bytes]:
    boundary = "benchboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"; "
            "filename=\"key.safetensors\"\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks():  # type: ignore[no-untyped-def]
        yield head
        block = b"\0" * MB
        for start in range(0, size, MB):
            yield block[:min(MB, size - start)]
        yield tail
    return head, chunks(), tail


def _upload(port: int, token: str, model: str, size: int) -> dict[str, Any]:
    head, body, tail = _stream(size)
    status, answer = _request(port, "POST", f"/api/models/{model}/commitments/", body, {
        "Content-Type": "multipart/form-data; boundary=benchboundary",
        "Content-Length": str(len(head) + size + len(tail)), "Authorization": f"Token {token}"})
    return {"status": status, "code": answer.get("code")}


def run(quick: bool = False) -> dict[str, Any]:
    cap = (16 if quick else 256) * MB
    data = Path(tempfile.mkdtemp(prefix="hallmark-upload-bench-"))
    env = {**os.environ, "HALLMARK_DATA_DIR": str(data), "HALLMARK_MAX_UPLOAD_BYTES": str(cap),
           "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env,
                   check=True)
    port = _free_port()
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "registry.wsgi", "-w", "1",
                            "-b", f"127.0.0.1:{port}", "--timeout", "300"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = _request(port, "GET", "/api/log/checkpoint")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        worker = int(subprocess.run(["pgrep", "-P", str(web.pid)], capture_output=True,
                                    text=True).stdout.split()[0])
        _, user = _request(port, "POST", "/api/signup", json.dumps(
            {"username": "bench", "password": "benchmark password"}).encode(),
            {"Content-Type": "application/json"})
        _, model = _request(port, "POST", "/api/models/", json.dumps({"name": "m"}).encode(),
                            {"Content-Type": "application/json",
                             "Authorization": f"Token {user['token']}"})
        rows = []
        for label, size in (("over the cap (300 MB at full size)", cap + 44 * MB),
                            ("under the cap, not a key", cap - MB)):
            _reset_hwm(worker)
            base = _hwm_kib(worker)
            t0 = time.perf_counter()
            answer = _upload(port, user["token"], model["id"], size)
            rows.append({"case": label, "bytes": size, **answer,
                         "seconds": round(time.perf_counter() - t0, 2),
                         "peak_growth_mb": round((_hwm_kib(worker) - base) / 1024, 1)})
            print(rows[-1], flush=True)
        return {"cap_mb": cap // MB, "rows": rows}
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upload_memory")
    parser.add_argument("--quick", action="store_true", help="a 16 MB cap instead of 256 MB")
    args = parser.parse_args()
    out = {"machine": machine(), "upload_memory": run(args.quick)}
    text = json.dumps(out, indent=1)
    print(text)
    if not args.quick:
        (ROOT / "bench" / "results" / "upload_memory.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
