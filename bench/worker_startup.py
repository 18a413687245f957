"""Worker start-up under load: are children ever killed before they report ready?

    python -m bench.worker_startup [--load 8] [--tasks 30] [--tree PATH] [--out FILE]

Starts `--load` busy-loop processes (each bounded to --busy-seconds), then a real
`celery -A workers worker -c 2 --max-tasks-per-child 1` on a private queue of the Redis at
HALLMARK_TEST_REDIS_URL (database: DATABASE_URL), and sends `--tasks` finalize tasks for a
verification that does not exist (a task every version of the worker knows, doing one query),
so that a fresh child is forked for every task. Reports the worker's time to ready, each child's age when
it reported ready (the "ready ... after fork" log line), and how many children Celery killed
for not reporting in time. `--tree` runs another checkout (e.g. /work/main before the change)
for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

_FINISHED = re.compile(r"workers\.finalize\[[^\]]+\] (?:succeeded|raised)")
BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"


def run(load: int, tasks: int, tree: Path, busy_seconds: float) -> dict[str, object]:
    import redis
    from kombu import Connection

    redis_url = os.environ.get("HALLMARK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    queue = f"hallmark-startup-{uuid.uuid4().hex[:8]}"
    busy = [subprocess.Popen([sys.executable, "-c", BUSY.format(s=busy_seconds)])
            for _ in range(load)]
    log = Path(tempfile.mkdtemp(prefix="hallmark-startup-")) / "worker.log"
    env = {**os.environ, "PYTHONPATH": str(tree), "CELERY_BROKER_URL": redis_url,
           "HALLMARK_QUEUE": queue, "HALLMARK_DATA_DIR": str(log.parent)}
    t0 = time.monotonic()
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-c", "2",
             "--max-tasks-per-child", "1", "-Q", queue, "-n",
             f"startup-{os.getpid()}@%h", "--loglevel", "INFO", "--without-gossip",
             "--without-mingle"], cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        up = _wait(log, lambda t: " ready." in t, t0 + busy_seconds)
        if up is None:
            raise SystemExit(f"the worker never became ready; see {log}")
        ready = up - t0
        with Connection(redis_url) as conn:
            producer = conn.Producer(serializer="json")
            for _ in range(tasks):
                _send_finalize(producer, queue)
        done_at = _wait(log, lambda t: len(_FINISHED.findall(t)) >= tasks, t0 + busy_seconds)
        loadavg = os.getloadavg()[0]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        for p in busy:
            p.kill()
            p.wait()
        redis.Redis.from_url(redis_url).delete(queue)
    text = log.read_text(errors="replace")
    ages = list({pid: float(a) for pid, a in re.findall(  # each line is logged twice
        r"worker child (\d+) ready ([0-9.]+) s after fork", text)}.values())
    killed = len(re.findall(r"Timed out waiting for UP message|exited with 'signal 9", text))
    done = len(_FINISHED.findall(text))
    return {"load_processes": load, "loadavg_1min_at_end": round(loadavg, 1),
            "tree": str(tree), "worker_ready_seconds": round(ready, 2),
            "tasks": tasks, "children_reporting_age": len(ages),
            "child_ready_after_fork_seconds": {
                "median": round(sorted(ages)[len(ages) // 2], 3) if ages else None,
                "max": round(max(ages), 3) if ages else None},
            "children_killed_at_start": killed,
            "tasks_done": done, "seconds_for_the_tasks": round(
                (done_at or time.monotonic()) - t0 - ready, 1), "log": str(log)}


def _send_finalize(producer, queue: str) -> None:  # type: ignore[no-untyped-def]
    """A Celery protocol-2 message for workers.finalize(0), without importing the project."""
    task_id = str(uuid.uuid4())
    producer.publish([[0], {}, {"callbacks": None, "errbacks": None, "chain": None,
                               "chord": None}],
                     routing_key=queue, exchange="", headers={
                         "lang": "py", "task": "workers.finalize", "id": task_id,
                         "root_id": task_id, "parent_id": None, "group": None,
                         "retries": 0, "eta": None, "expires": None, "argsrepr": "(0,)",
                         "kwargsrepr": "{}", "origin": "bench"})


def _wait(log: Path, ok, deadline: float) -> float | None:  # type: ignore[no-untyped-def]
    """When `ok(log text)` first held, or None at the deadline."""
    while time.monotonic() < deadline:
        if log.exists() and ok(log.read_text(errors="replace")):
            return time.monotonic()
        time.sleep(0.2)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_startup")
    parser.add_argument("--load", type=int, default=8, help="busy-loop processes")
    parser.add_argument("--tasks", type=int, default=30, help="tasks = children forked")
    parser.add_argument("--busy-seconds", type=float, default=300, help="bound on the load")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--out", type=Path, help="append the result (JSON lines) to this file")
    args = parser.parse_args()
    result = run(args.load, args.tasks, args.tree.resolve(), args.busy_seconds)
    text = json.dumps(result)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
