"""Scaling: how much faster do 2 worker processes drain a burst than 1? Measured in one run.

    python -m bench.drain [--verifications 100] [--rounds 3]

On a private scaled-mode stack (`bench.stack`), with one celery worker process (`-c 1`) or two
(separate HALLMARK_DATA_DIR each, as on two hosts), warmed up: pause their consumption
(Celery's remote control, `cancel_consumer`), submit a burst over the API (a backlog of queued
verifications), resume (`add_consumer`) and time the drain in the database: from the first
fetch a worker began (`fetch_claimed_at`) to the last `finished_at`. (Measuring from
the first submission made the client's submission rate, not the workers, the limit once two
processes drained faster than 8 client threads submitted.) The phases alternate, 1 then 2
processes, for `rounds` rounds, so a change in the machine's load falls on both sides; ratio =
the median over rounds of time(1) / time(2); the goal is ≥ 1.8. It also says where the time
goes, per phase:
- busy: the seconds Celery reports per task ("succeeded in …s"), by task name, against the
  process-seconds available (wall × processes); the rest is hand-off and idle time;
- CPU: seconds used by the workers, PostgreSQL's backends, Redis, the web and beat, and how
  busy the whole machine was (other processes included), from /proc/stat;
- SQL: PostgreSQL transactions committed per verification (pg_stat_database);
- the load average at the start and the end.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from bench.stack import QUEUE, Stack, say

RESULTS = Path(__file__).resolve().parent / "results" / "drain.json"
_SUCCEEDED = re.compile(r"^\[(?P<ts>[\d-]+ [\d:,]+): INFO/[\w-]+\] Task workers\.(?P<task>\w+)"
                        r"\[[^\]]+\] succeeded in (?P<s>[\d.e-]+)s", re.M)


def _submit(stack: Stack, token: str, urls: list[str], n: int, threads: int = 8) -> list[str]:
    from verifier.client import Client

    def one(i: int) -> str:
        return Client(stack.url, token=token, timeout=60).submit(urls[i % len(urls)])["id"]

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def _wait(stack: Stack, ids: list[str], timeout: float) -> float:
    """Seconds from the first fetch a worker began (fetch_claimed_at) to the last finish, from
    the rows; raises on timeout."""
    deadline = time.monotonic() + timeout
    with stack.db() as conn:
        while True:
            left = conn.execute("SELECT count(*) FROM registry_verification WHERE public_id = "
                                "ANY(%s::uuid[]) AND status NOT IN ('done', 'failed')", [ids]).fetchone()[0]
            if left == 0:
                first, last, failed = conn.execute(
                    "SELECT min(fetch_claimed_at), max(finished_at), count(*) FILTER (WHERE status = "
                    "'failed') FROM registry_verification WHERE public_id = ANY(%s::uuid[])",
                    [ids]).fetchone()
                if failed:
                    raise RuntimeError(f"{failed} verifications failed during the drain")
                return (last - first).total_seconds()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} of {len(ids)} verifications not drained in {timeout:.0f} s")
            time.sleep(0.2)


def _xacts(stack: Stack) -> int:
    with stack.db() as conn:
        return int(conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = "
                                "'hallmark'").fetchone()[0])


def _cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of a process and its descendants, live or reaped (pool
    children are recycled every HALLMARK_WORKER_MAX_TASKS_PER_CHILD tasks)."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:4]) for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0.0


def cpu_by_component(stack: Stack, processes: int) -> dict[str, float]:
    """CPU seconds so far of the workers, PostgreSQL (every backend), Redis, the web and beat."""
    postmaster = None
    with contextlib.suppress(OSError, ValueError):
        postmaster = int((stack.pg.data / "postmaster.pid").read_text().split()[0])
    redis = stack.redis.proc.pid if stack.redis.proc else None
    return {"workers": sum(_cpu(stack.procs[stack.worker_name(i)].pid) for i in range(processes)),
            "postgres": _cpu(postmaster), "redis": _cpu(redis),
            "web": _cpu(stack.procs["web"].pid),
            "beat": _cpu(stack.procs["beat"].pid) if "beat" in stack.procs else 0.0}


def _busy_by_task(stack: Stack, processes: int, since: str) -> dict[str, float]:
    """Seconds per task name that Celery logged as succeeded after `since` (log timestamp)."""
    out: dict[str, float] = defaultdict(float)
    for i in range(processes):
        for m in _SUCCEEDED.finditer(stack.log(stack.worker_name(i))):
            if m["ts"] >= since:
                out[m["task"]] += float(m["s"])
    return {k: round(v, 2) for k, v in sorted(out.items())}


def _startup_timeouts(stack: Stack, processes: int) -> int:
    """Pool children Celery killed for not starting in time (a kill/respawn loop, issue 10)."""
    return sum(stack.log(stack.worker_name(i)).count("Timed out waiting for UP")
               for i in range(processes))


def _phase(stack: Stack, token: str, urls: list[str], processes: int, n: int,
           timeout: float) -> dict[str, Any]:
    """With `processes` workers running and warm, pause their consumption (Celery's remote
    control), queue a burst of `n`, resume, and time the drain."""
    from celery import Celery

    for i in range(2):
        if i >= processes:
            stack.stop_worker(i)
        elif not stack.running(i):
            stack.start_worker(i, concurrency=1)
    for i in range(processes):
        stack.wait_worker_ready(i)
    say(f"{processes} worker process(es): warming up…")
    _wait(stack, _submit(stack, token, urls, 2 * processes), timeout)
    control = Celery("drain-control", broker=stack.redis.url).control
    names = [f"{stack.worker_name(i)}@{socket.gethostname()}" for i in range(processes)]
    paused = control.cancel_consumer(QUEUE, destination=names, reply=True, timeout=10)
    if len(paused) != processes:
        raise RuntimeError(f"only {len(paused)} of {processes} workers paused: {paused}")
    load0 = psutil.getloadavg()[0]
    say(f"{processes} worker process(es): consumption paused, queueing a burst of {n}…")
    t0 = time.monotonic()
    ids = _submit(stack, token, urls, n)
    submit_s = time.monotonic() - t0
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    time.sleep(1.0)
    cpu0, machine0, xact0 = cpu_by_component(stack, processes), psutil.cpu_times(), _xacts(stack)
    resumed = control.add_consumer(QUEUE, destination=names, reply=True, timeout=10)
    if len(resumed) != processes:
        raise RuntimeError(f"only {len(resumed)} of {processes} workers resumed: {resumed}")
    say(f"{processes} worker process(es): draining…")
    try:
        seconds = _wait(stack, ids, timeout)
    except TimeoutError as e:
        say(f"{processes} worker process(es): {e}")
        return {"processes": processes, "verifications": n, "seconds": None, "error": str(e),
                "child_startup_timeouts": _startup_timeouts(stack, processes),
                "load_average": [round(load0, 2), round(psutil.getloadavg()[0], 2)]}
    machine1 = psutil.cpu_times()
    cpu = {k: round(v - cpu0[k], 1) for k, v in cpu_by_component(stack, processes).items()}
    xacts = _xacts(stack) - xact0
    time.sleep(1.0)
    busy = _busy_by_task(stack, processes, since)
    idle0, idle1 = machine0.idle + machine0.iowait, machine1.idle + machine1.iowait
    span = sum(machine1) - sum(machine0)
    result = {
        "processes": processes, "verifications": n, "seconds": round(seconds, 2),
        "per_second": round(n / seconds, 2), "submit_seconds": round(submit_s, 2),
        "task_seconds": busy, "busy_fraction": round(sum(busy.values()) / (seconds * processes), 3),
        "cpu_seconds": cpu,
        "machine_busy_fraction": round(1 - (idle1 - idle0) / span, 3) if span else None,
        "sql_transactions_per_verification": round(xacts / n, 1),
        "child_startup_timeouts": _startup_timeouts(stack, processes),
        "load_average": [round(load0, 2), round(psutil.getloadavg()[0], 2)],
    }
    say(f"{processes} worker process(es): {n} drained in {seconds:.1f}s ({n / seconds:.1f}/s); "
        f"tasks busy {result['busy_fraction']:.0%} of the process time, machine busy "
        f"{result['machine_busy_fraction']:.0%}, load {result['load_average']}")
    return result


def run(verifications: int = 100, timeout: float = 300, rounds: int = 3) -> dict[str, Any]:
    """Time the drain of one burst with 1, then 2, worker processes, `rounds` times; returns
    the median ratio with every phase."""
    from bench import fixtures
    from registry.demo import serve_folder

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, received {rounds}")
    root = Path(tempfile.mkdtemp(prefix="hm-drain-"))
    root.chmod(0o755)  # the `postgres` user must reach its cluster folder inside
    try:
        marked, _ = fixtures.make_suspects(root / "served", 1)
        with Stack(root / "stack", workers=0, concurrency=1) as stack, \
                serve_folder(root / "served") as files:
            reg = fixtures.register(stack.url, files, marked)
            urls = [s.url for s in reg.suspects]
            phases = []
            for _ in range(rounds):
                phases.append(_phase(stack, reg.token, urls, 1, verifications, timeout))
                phases.append(_phase(stack, reg.token, urls, 2, verifications, timeout))
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    pairs = list(zip(phases[0::2], phases[1::2], strict=True))
    if any(a["seconds"] is None or b["seconds"] is None for a, b in pairs):
        say(f"drain of {verifications}: not drained in {timeout:.0f} s, no ratio")
        return {"verifications": verifications, "rounds": rounds, "ratio_1_to_2": None,
                "phases": phases}
    ratios = [round(a["seconds"] / b["seconds"], 2) for a, b in pairs]
    ratio = statistics.median(ratios)
    one = ", ".join(f"{a['seconds']:.1f}" for a, _ in pairs)
    two = ", ".join(f"{b['seconds']:.1f}" for _, b in pairs)
    say(f"drain of {verifications}, {rounds} round(s): 1 process {one} s, 2 processes {two} s: "
        f"ratios {ratios}, median {ratio:.2f} (goal ≥ 1.8)")
    return {"verifications": verifications, "rounds": rounds, "ratio_1_to_2": round(ratio, 2),
            "ratios": ratios, "phases": phases}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    from bench.machine import machine

    parser = argparse.ArgumentParser(prog="python -m bench.drain")
    parser.add_argument("--verifications", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of 1 and 2 processes")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every process is stopped and the cluster deleted.
    signal.signal(signal.SIGTERM, _interrupt)
    text = json.dumps({"machine": machine(), **run(args.verifications, rounds=args.rounds)}, indent=1)
    print(text)
    args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
