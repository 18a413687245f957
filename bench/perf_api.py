"""GET /api/reports/<id> and GET /api/log/checkpoint under load, against a bare DRF view on the
same gunicorn -w 2 server (bench.api_site), measured with wrk at c = 32, interleaved, medians.

A private PostgreSQL database (hallmark_perfbench on DATABASE_URL's server) holds one report of
10 checks; it is dropped afterwards.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DB = "hallmark_perfbench"
CHECKS = 10
CONNECTIONS = 32


def _say(msg: str) -> None:
    print(f"[perf api] {msg}", file=sys.stderr, flush=True)


def _server_url() -> str:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hallmark")
    return base.rsplit("/", 1)[0]


def _psql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{_server_url()}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _fixture() -> dict[str, str]:
    """(In a child with the bench settings) one owner, one model with CHECKS commitments, and
    a finished verification against it, finalized into a signed, logged report."""
    import django

    django.setup()
    import hashlib

    import torch
    from django.contrib.auth.models import User
    from django.utils import timezone

    from registry import reporting
    from registry.identities import new_owner_fields
    from registry.models import CHECKED, Owner, Suspect, Verification
    from registry.registration import add_commitment, register_model
    from verifier import toy
    from verifier.schemes import uchida

    user = User.objects.create_user("bench", password="benchmark password, not for production")
    owner = Owner.objects.create(user=user, **new_owner_fields(None))
    model = register_model(owner, name="bench")
    commitments = []
    for seed in range(CHECKS):
        torch.manual_seed(seed)
        blob = uchida.generate_key(uchida.Params(bits=128), seed, model=toy.MLP()).to_bytes()
        commitments.append(add_commitment(model, blob))
    suspect = Suspect.objects.create(url="http://127.0.0.1/suspect.safetensors",
                                     sha256=hashlib.sha256(b"suspect").hexdigest(), size=7,
                                     format="safetensors", fetched_at=timezone.now())
    v = Verification.objects.create(suspect=suspect, requested_by=owner, target=model,
                                    status="done", checks_expected=CHECKS, checks_done=CHECKS)
    v.fetched_at = v.finished_at = timezone.now()
    v.save()
    for c in commitments:
        v.checks.create(commitment=c, scheme="uchida", status=CHECKED, statistic=64, n=128,
                        log10_p=-0.3, null="binomial(128, 1/2)", claim="bits")
    report = reporting.finalize(v)
    return {"report": str(report.public_id), "bytes": str(len(bytes(report.document or b"")))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wrk(url: str, seconds: int) -> dict[str, float]:
    """wrk -t1 -c32: requests/s and p99 latency (ms); non-2xx answers fail the run."""
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out and "timeout" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale}


def run(seconds: int = 8, rounds: int = 3) -> dict[str, Any]:
    """Requests/s and p99 of the report, the checkpoint and the bare view, interleaved."""
    if shutil.which("wrk") is None:
        raise RuntimeError("the API benchmark needs wrk (apt-get install wrk)")
    data = Path(tempfile.mkdtemp(prefix="hallmark-perf-api-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "bench.api_site",
           "DATABASE_URL": f"{_server_url()}/{DB}", "HALLMARK_DATA_DIR": str(data),
           "DJANGO_DEBUG": "0"}
    _psql(f"DROP DATABASE IF EXISTS {DB}")
    _psql(f"CREATE DATABASE {DB}")
    server = None
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                       check=True)
        made = subprocess.run([sys.executable, "-m", "bench.perf_api", "_fixture"], cwd=ROOT,
                              env=env, check=True, capture_output=True, text=True)
        fixture = json.loads(made.stdout.strip().splitlines()[-1])
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b",
                                   f"127.0.0.1:{port}", "--log-level", "warning",
                                   "registry.wsgi:application"], cwd=ROOT, env=env)
        base = f"http://127.0.0.1:{port}"
        urls = {"bare": f"{base}/bench/bare", "report": f"{base}/api/reports/{fixture['report']}",
                "checkpoint": f"{base}/api/log/checkpoint"}
        for _ in range(100):  # up, and every URL answers 200 (the checkpoint gets signed)
            try:
                for u in urls.values():
                    urllib.request.urlopen(u, timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in urls}
        for i in range(rounds):
            for name, url in urls.items():
                runs[name].append(_wrk(url, seconds))
                _say(f"round {i + 1} {name}: {runs[name][-1]}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        _psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        shutil.rmtree(data, ignore_errors=True)
    med = {k: {m: round(statistics.median(r[m] for r in v), 1) for m in ("rps", "p99_ms")}
           for k, v in runs.items()}
    out: dict[str, Any] = {"server": "gunicorn -w 2 (sync)", "client": f"wrk -t1 -c{CONNECTIONS}",
                           "seconds_per_run": seconds, "rounds": rounds,
                           "report_bytes": int(fixture["bytes"]), "report_checks": CHECKS,
                           "median": med, "runs": runs}
    for name in ("report", "checkpoint"):
        out[f"{name}_vs_bare"] = round(med[name]["rps"] / med["bare"]["rps"], 2)
    out["summary"] = [
        f"GET /api/reports/<id> ({CHECKS} checks): {med['report']['rps']:.0f} req/s, p99 "
        f"{med['report']['p99_ms']} ms at c={CONNECTIONS} = {out['report_vs_bare']}x the bare "
        f"DRF view's {med['bare']['rps']:.0f} req/s (goal >= 1000 req/s, p99 < 50 ms, >= 0.5x)",
        f"GET /api/log/checkpoint: {med['checkpoint']['rps']:.0f} req/s, p99 "
        f"{med['checkpoint']['p99_ms']} ms = {out['checkpoint_vs_bare']}x the bare view"]
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["_fixture"]:
        print(json.dumps(_fixture()))
    else:
        result = run(*(int(a) for a in sys.argv[1:3]))
        print("\n".join(result["summary"]))
