"""A scan that scales: registry scans of N = 100, 1,000, 10,000 uchida commitments on a
1M-weight layer, through one real worker process on one core, with a linear fit.

    python -m bench.scan [--sizes 100 1000 10000]

On a private scaled-mode stack (`bench.stack`: its own PostgreSQL and Redis, gunicorn, beat)
with ONE celery worker process (`-c 1`), so commitments/s is per core. The registry grows to
each N in turn (cumulative inserts), and one scan of the same suspect is submitted over the
API at each size. The suspect is a safetensors file served on 127.0.0.1 with a 1024 × 1024
layer (1,048,576 weights) plus a bias and a 10 × 1024 head; every key names that layer
(T = 256 bits), so every commitment is a candidate and is tested: the worst case.

Keys are real (`uchida.Key`, bits derived from the seed, sealed with the stack's master key)
but are bulk-inserted into the stack's database by a helper process instead of being uploaded
one by one: their `log_index` is 10^9 + i, outside the real log (the reports cite them; no
audit of these reports is intended). Per N it records, from the rows:
- end to end: submitted → report stored (fetch, batches, finalize: Holm, signing, logging);
- checks: fetched → last check row finished (the batches alone);
- the CPU seconds of the worker (main process + children) and of PostgreSQL (every backend,
  live or reaped), and the report's size.
commitments/s = N / wall seconds; on a shared machine (load above the core count) the wall
time is mostly waiting for a core, so commitments per CPU-second (worker + PostgreSQL) is the
per-core rate. The fit is least squares of seconds = a + b·N over the sizes.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stack import Stack, say

RESULTS = Path(__file__).resolve().parent / "results" / "scan.json"
LAYER = "layer.weight"
SHAPE = (1024, 1024)  # 1,048,576 weights
BITS = 256
PASSWORD = "benchmark password, not for production"


def insert(model_public_id: str, start: int, stop: int) -> None:
    """Bulk-insert uchida commitments start..stop-1 (run inside the stack's environment)."""
    import hashlib

    import django

    django.setup()
    from django.conf import settings

    from registry.models import Commitment, RegisteredModel
    from registry.secrets import seal
    from verifier.evidence import commitment as commit_lib
    from verifier.schemes import uchida

    model = RegisteredModel.objects.get(public_id=model_public_id)
    rows = []
    for i in range(start, stop):
        key = uchida.Key(seed=10_000 + i, bits=uchida.derive_bits(10_000 + i, BITS),
                         layers=(LAYER,), shapes=(SHAPE,), lam=1.0)
        blob, params = key.to_bytes(), key.public_params()
        salt = commit_lib.new_salt()
        rows.append(Commitment(
            model=model, scheme="uchida", public_params=params,
            digest=commit_lib.commit("uchida", salt, blob), salt=salt,
            key_sha256=hashlib.sha256(blob).hexdigest(),
            sealed_key=seal(settings.HALLMARK_MASTER_KEY, blob), envelope="",
            screening={"status": "not needed"}, log_index=10**9 + i,
            **Commitment.index_fields("uchida", params)))
    Commitment.objects.bulk_create(rows, batch_size=1000)


def _write_suspect(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    save_file({LAYER: torch.randn(*SHAPE, generator=g) * 0.03,
               "layer.bias": torch.zeros(SHAPE[0]),
               "head.weight": torch.randn(10, SHAPE[0], generator=g) * 0.03},
              str(folder / "suspect.safetensors"))


def _cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of worker 0 and of PostgreSQL (live and reaped processes)."""
    from bench.drain import cpu_by_component

    c = cpu_by_component(stack, 1)
    return {"worker": c["workers"], "postgres": c["postgres"]}


def _scan(stack: Stack, client: Any, url: str, n: int, timeout: float) -> dict[str, Any]:
    cpu0 = _cpu(stack)
    vid = client.submit(url)["id"]
    deadline = time.monotonic() + timeout
    with stack.db() as conn:
        while True:
            row = conn.execute(
                "SELECT v.id, v.status, v.checks_expected, v.checks_done, "
                "extract(epoch FROM v.finished_at - v.submitted_at), "
                "extract(epoch FROM v.fetched_at - v.submitted_at) FROM registry_verification v "
                "WHERE v.public_id = %s::uuid", [vid]).fetchone()
            assert row is not None
            pk, status, expected, done = row[:4]
            report = conn.execute("SELECT length(envelope) FROM registry_report WHERE "
                                  "verification_id = %s", [pk]).fetchone()
            if status == "failed":
                raise RuntimeError(f"the scan of {n} failed")
            if report is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the scan of {n} did not finish in {timeout:.0f} s "
                                   f"({status}, {done}/{expected})")
            time.sleep(0.2)
        checks = conn.execute(
            "SELECT extract(epoch FROM max(c.finished_at) - v.fetched_at), count(*), "
            "count(DISTINCT c.batch), count(*) FILTER (WHERE c.status <> 'checked') "
            "FROM registry_checkresult c JOIN registry_verification v ON v.id = c.verification_id "
            "WHERE v.id = %s GROUP BY v.fetched_at", [pk]).fetchone()
        signed = conn.execute(
            "SELECT extract(epoch FROM r.created_at - v.submitted_at) FROM registry_report r "
            "JOIN registry_verification v ON v.id = r.verification_id WHERE v.id = %s",
            [pk]).fetchone()
        assert signed is not None
        end_to_end = float(signed[0])
    log = stack.log(stack.worker_name(0))
    fetch_s = re.search(rf"fetch v={vid} ok:.*ran ([\d.]+)s", log)
    final_s = re.search(rf"finalize v={vid} .* in ([\d.]+)s", log)
    if n == 0:  # the warm-up: no check rows
        return {"n": 0, "end_to_end_seconds": round(end_to_end, 2)}
    assert checks is not None
    check_seconds, rows, batches, not_checked = float(checks[0]), checks[1], checks[2], checks[3]
    cpu1 = _cpu(stack)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}
    out = {"n": n, "rows": rows, "batches": batches, "not_checked": not_checked,
           "end_to_end_seconds": round(end_to_end, 2),
           "check_seconds": round(check_seconds, 2),
           "worker_cpu_seconds": round(cpu["worker"], 2),
           "postgres_cpu_seconds": round(cpu["postgres"], 2),
           "commitments_per_second": round(n / end_to_end, 1),
           "checks_per_second": round(n / check_seconds, 1),
           # per core: the scan's CPU in the worker and the database, whatever the load
           "commitments_per_cpu_second": round(n / (cpu["worker"] + cpu["postgres"]), 1),
           "fetch_task_seconds": float(fetch_s.group(1)) if fetch_s else None,
           "finalize_task_seconds": float(final_s.group(1)) if final_s else None,
           "report_bytes": report[0]}
    say(f"scan of {n}: {out['end_to_end_seconds']} s end to end ({out['commitments_per_second']}"
        f"/s), checks {out['check_seconds']} s ({out['checks_per_second']}/s) in {batches} "
        f"batches, fetch task {out['fetch_task_seconds']} s, finalize task "
        f"{out['finalize_task_seconds']} s, CPU worker {out['worker_cpu_seconds']} s + PostgreSQL "
        f"{out['postgres_cpu_seconds']} s ({out['commitments_per_cpu_second']}/CPU-s), "
        f"report {report[0]:,} bytes")
    if rows != n or not_checked:
        raise RuntimeError(f"the scan of {n} made {rows} rows, {not_checked} not checked")
    return out


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares (a, b) of y = a + b·x.

    Example:
        >>> fit([1, 2, 3], [3, 5, 7])
        (1.0, 2.0)
    """
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / \
        sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def run(sizes: tuple[int, ...] = (100, 1_000, 10_000), timeout: float = 1800,
        batch: int | None = None) -> dict[str, Any]:
    """Scan at each size through one worker process; returns the rows and the linear fit."""
    from registry.demo import serve_folder
    from verifier.client import Client

    root = Path(tempfile.mkdtemp(prefix="hm-scan-"))
    root.chmod(0o755)  # the `postgres` user must reach its cluster folder inside
    # Batches wait in the queue while earlier ones run: keep the sweeper from re-driving them
    # row by row during the benchmark (docs/architecture.md, "Scan").
    env = {"HALLMARK_REDRIVE_AFTER": str(int(timeout))}
    if batch:
        env["HALLMARK_SCAN_BATCH"] = str(batch)
    results = []
    try:
        _write_suspect(root / "served")
        with Stack(root / "stack", workers=0, concurrency=1, env=env) as stack, \
                serve_folder(root / "served") as files:
            client = Client(stack.url, timeout=120)
            client.signup("scanner", PASSWORD)
            model = client.register_model("bench-scan", version="1")
            stack.start_worker(0, concurrency=1)
            stack.wait_worker_ready(0)
            url = f"{files}/suspect.safetensors"
            _scan(stack, client, url, 0, timeout)  # warm-up: fetch and load the suspect once
            have = 0
            for n in sizes:
                t0 = time.monotonic()
                subprocess.run([sys.executable, "-m", "bench.scan", "insert", model["id"],
                                str(have), str(n)], env=stack.env(root / "insert"), check=True,
                               timeout=timeout)
                say(f"registry grown to {n} commitments in {time.monotonic() - t0:.1f} s")
                have = n
                results.append(_scan(stack, client, url, n, timeout))
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    a, b = fit([r["n"] for r in results], [r["end_to_end_seconds"] for r in results])
    ca, cb = fit([r["n"] for r in results], [r["check_seconds"] for r in results])
    pa, pb = fit([r["n"] for r in results],
                 [r["worker_cpu_seconds"] + r["postgres_cpu_seconds"] for r in results])
    out: dict[str, Any] = {"layer": list(SHAPE), "bits": BITS, "worker_processes": 1, "sizes": results,
           "fit_end_to_end": {"a_seconds": round(a, 3), "b_seconds_per_commitment": round(b, 6),
                              "marginal_commitments_per_second": round(1 / b, 1) if b > 0 else None},
           "fit_checks": {"a_seconds": round(ca, 3), "b_seconds_per_commitment": round(cb, 6),
                          "marginal_commitments_per_second": round(1 / cb, 1) if cb > 0 else None},
           "fit_cpu": {"a_seconds": round(pa, 3), "b_seconds_per_commitment": round(pb, 6),
                       "marginal_commitments_per_cpu_second": round(1 / pb, 1) if pb > 0 else None}}
    say(f"linear fit, end to end: seconds = {a:.2f} + {b * 1000:.3f} ms × N "
        f"({out['fit_end_to_end']['marginal_commitments_per_second']} commitments/s at the margin)")
    say(f"linear fit, checks only: seconds = {ca:.2f} + {cb * 1000:.3f} ms × N "
        f"({out['fit_checks']['marginal_commitments_per_second']} commitments/s)")
    say(f"linear fit, CPU (worker + PostgreSQL): seconds = {pa:.2f} + {pb * 1000:.3f} ms × N "
        f"({out['fit_cpu']['marginal_commitments_per_cpu_second']} commitments per CPU-second)")
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    from bench.machine import machine

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["insert"]:  # the helper, inside the stack's environment
        insert(argv[1], int(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.scan")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--batch", type=int, default=None, help="HALLMARK_SCAN_BATCH for the worker")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    if len(set(args.sizes)) < 2:
        parser.error("--sizes needs at least two different sizes: the result is a linear fit "
                     "of seconds against N")
    # SIGTERM unwinds like Ctrl-C, so every process is stopped and the cluster deleted.
    signal.signal(signal.SIGTERM, _interrupt)
    text = json.dumps({"machine": machine(), **run(tuple(args.sizes), batch=args.batch)}, indent=1)
    print(text)
    args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
