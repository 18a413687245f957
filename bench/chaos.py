"""`make chaos`: faults under load on a private scaled-mode registry, then an account of the damage.

    python -m bench.chaos            # 300 verifications, 12 worker kills, Redis + PostgreSQL restarts
    python -m bench.chaos --small    # CI size: 120 verifications, 2 kills, one restart of each

It starts web (gunicorn), celery beat (when the code has a beat schedule) and ≥ 2 celery
workers, each with its own HALLMARK_DATA_DIR, on a private PostgreSQL cluster and a private
redis-server (`bench.stack`); registers owners and commitments and serves suspects on
127.0.0.1 (`bench.fixtures`); submits a burst of verifications over the API while a schedule
of faults runs: kill -9 of a worker's pool child, kill -9 of a worker's main process with its
children (the worker is started again, as a host would reboot), a crash-restart of Redis
(kill -9, started again on its append-only file) and `pg_ctl restart -m immediate`. Each fault
fires only while verifications are outstanding, and records how many were. Then it waits for
the drain up to a deadline and prints: submitted, reports, stuck after the deadline,
duplicates (check rows, reports, log entries), inconclusive, time to drain, and the log's
consistency (`bench.logcheck`). Exit code 0 only when nothing is stuck, lost or duplicated
and the log is consistent. Every process is stopped and the cluster deleted on any exit.
"""
from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.stack import Stack, say

RESULTS = Path(__file__).resolve().parent / "results"
TERMINAL = ("done", "failed")
# The faults, in order, one every `interval` seconds: the restarts come early, while the burst
# is still being submitted (a restart during a submission is a fault of its own).
FULL_EVENTS = ["child", "redis", "main", "child", "postgres", "child", "main", "child",
               "main", "child", "main", "child", "main", "child"]  # 7 + 5 = 12 kills
SMALL_EVENTS = ["redis", "child", "postgres", "main"]


@dataclass
class Config:
    verifications: int = 300
    models: int = 2
    workers: int = 2
    concurrency: int = 2  # pool children per worker
    web_workers: int = 2  # gunicorn processes
    events: list[str] = field(default_factory=lambda: list(FULL_EVENTS))
    first_event: float = 2.0  # seconds after the burst starts
    interval: float = 2.5  # seconds from the end of one fault to the next
    deadline: float = 600.0  # seconds allowed for the drain after the last fault
    submit_threads: int = 8
    volatile_redis: bool = False
    env: dict[str, str] = field(default_factory=dict)  # extra settings for every process
    supervise: bool = True  # start again a worker that exited by itself (reported)

    @classmethod
    def small(cls) -> Config:
        # Shorter fault timers than the defaults (lease 30 s, sweep every 15 s, re-drive lost
        # messages after 120 s) so recovery fits a CI budget; code without them ignores them.
        timers = {"HALLMARK_LEASE_SECONDS": "8", "HALLMARK_SWEEP_INTERVAL": "3",
                  "HALLMARK_REDRIVE_AFTER": "15"}
        # 120: enough work to outlast the 4 faults on a quiet machine (20 drained in ~1 s once
        # workers kept their connections, before the kills could find work in flight)
        return cls(verifications=120, models=1, concurrency=1, web_workers=1,
                   events=list(SMALL_EVENTS), first_event=0.3, interval=0.7, deadline=75.0,
                   submit_threads=2, env=timers)


@dataclass
class Submissions:
    accepted: dict[str, str] = field(default_factory=dict)  # verification id -> suspect name
    errors: Counter = field(default_factory=Counter)  # "HTTP 500", "URLError", …
    retries: int = 0
    started: float = 0.0
    finished: float = 0.0


def _submit_burst(stack: Stack, token: str, suspects: list, n: int, threads: int) -> Submissions:
    """Submit n verifications over the API; a client retries 503s and refused connections only
    (both mean the request was not taken), never a 500 (it may have left a row)."""
    from verifier.client import APIError, Client

    out = Submissions(started=time.monotonic())
    lock = threading.Lock()

    def one(i: int) -> None:
        s = suspects[i % len(suspects)]
        client = Client(stack.url, token=token, timeout=30)
        for attempt in range(6):
            try:
                v = client.submit(s.url)
            except (APIError, OSError) as e:  # urllib.error.URLError is an OSError
                if _not_taken(e) and attempt < 5:
                    with lock:
                        out.retries += 1
                    time.sleep(0.5 * 2 ** attempt)
                    continue
                with lock:
                    out.errors[f"HTTP {e.status}" if isinstance(e, APIError) else type(e).__name__] += 1
                return
            with lock:
                out.accepted[v["id"]] = s.name
            return

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    out.finished = time.monotonic()
    return out


def _not_taken(e: Exception) -> bool:
    """503 (the registry refused before saving anything) or a refused connection."""
    from verifier.client import APIError

    if isinstance(e, APIError):
        return e.status == 503
    return isinstance(getattr(e, "reason", e), ConnectionRefusedError)


def _status_counts(stack: Stack) -> Counter | None:
    """Verifications by status; None while PostgreSQL is unreachable (restarting)."""
    try:
        with stack.db() as conn:
            return Counter(dict(conn.execute(
                "SELECT status, count(*) FROM registry_verification GROUP BY status").fetchall()))
    except psycopg.Error:
        return None


def _outstanding(counts: Counter | None) -> int:
    """Verifications not done or failed; -1 when unknown."""
    if counts is None:
        return -1
    return sum(v for k, v in counts.items() if k not in TERMINAL)


class Faults(threading.Thread):
    """Runs the fault schedule while verifications are outstanding; records each fault."""

    def __init__(self, stack: Stack, cfg: Config, start: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.cfg, self.t0 = stack, cfg, start
        self.log: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._mains = 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 (reported by the main thread)
            self.error = e

    def _run(self) -> None:
        next_at = self.t0 + self.cfg.first_event
        for k, event in enumerate(self.cfg.events):
            time.sleep(max(0.0, next_at - time.monotonic()))
            counts = _status_counts(self.stack)
            outstanding = _outstanding(counts)
            record = {"t": round(time.monotonic() - self.t0, 1), "event": event,
                      "outstanding": outstanding, "queued_messages": self.stack.redis.queue_length()}
            if outstanding == 0:
                record["skipped"] = "drained: no verification outstanding"
            else:
                record.update(self._fire(event))
            self.log.append(record)
            next_at = time.monotonic() + self.cfg.interval  # a restart may take seconds
            say(f"fault {k + 1}/{len(self.cfg.events)} at {record['t']:.1f}s: {event} "
                f"({outstanding} outstanding) {record.get('skipped') or record.get('detail', '')}")

    def _fire(self, event: str) -> dict[str, Any]:
        s = self.stack
        t = time.monotonic()
        if event == "child":
            # a worker may have no child for a moment (one just died): try each, for up to 10 s
            for attempt in range(20):
                i = (len(self.log) + attempt) % s.workers
                pid = s.kill_child(i)
                if pid is not None:
                    return {"detail": f"kill -9 pool child {pid} of worker{i}", "killed": True}
                time.sleep(0.5)
            return {"detail": "no worker had a pool child to kill for 10 s", "killed": False}
        if event == "main":
            i = self._mains % s.workers
            self._mains += 1
            with s.lock:
                s.kill_worker(i)
                time.sleep(1.0)  # the host is down for a moment
                s.start_worker(i)
            return {"detail": f"kill -9 worker{i} (main + children), started again", "killed": True}
        if event == "redis":
            s.restart_redis()
            return {"detail": f"redis-server crash-restarted in {time.monotonic() - t:.1f}s"}
        if event == "postgres":
            s.restart_postgres()
            return {"detail": f"pg_ctl restart -m immediate in {time.monotonic() - t:.1f}s"}
        raise ValueError(f"unknown fault {event!r}")


def _drain(stack: Stack, faults: Faults, subs_done: threading.Event, cfg: Config,
           t0: float) -> tuple[float | None, Counter | None]:
    """Wait until nothing is outstanding (after the burst and the faults) or the deadline."""
    last_print = 0.0
    deadline: float | None = None
    while True:
        if cfg.supervise:
            stack.supervise()
        counts = _status_counts(stack)
        now = time.monotonic()
        busy = faults.is_alive() or not subs_done.is_set()
        if not busy and deadline is None:
            deadline = now + cfg.deadline
        if not busy and _outstanding(counts) == 0:
            return now - t0, counts
        if deadline is not None and now > deadline:
            return None, counts
        if now - last_print > 5:
            last_print = now
            states = ("PostgreSQL unreachable" if counts is None
                      else ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            say(f"  {now - t0:5.0f}s  {states}; {stack.redis.queue_length()} messages queued")
        time.sleep(0.5)


def _statement(envelope: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))


def _is_inconclusive(verdict: dict[str, Any]) -> bool:
    values = [verdict.get(k) for k in ("outcome", "result", "status", "decision")]
    return bool(verdict.get("inconclusive")) or "inconclusive" in values


def _account(stack: Stack, subs: Submissions, marked_owner: dict[str, str | None]) -> dict[str, Any]:
    """Counts from the database: reports, stuck, duplicates, inconclusive, wrong verdicts."""
    with stack.db() as conn:
        rows = conn.execute("SELECT v.public_id::text, v.status, v.error_code, v.checks_done, "
                            "v.checks_expected, r.envelope FROM registry_verification v "
                            "LEFT JOIN registry_report r ON r.verification_id = v.id").fetchall()
        dup_checks = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM registry_checkresult GROUP BY verification_id, "
            "commitment_id, scheme HAVING count(*) > 1) d").fetchone()[0]
        dup_reports = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM registry_report GROUP BY verification_id "
            "HAVING count(*) > 1) d").fetchone()[0]
        report_entries = conn.execute(
            "SELECT count(*) FROM registry_logentry WHERE kind = 'report'").fetchone()[0]
        reports = conn.execute("SELECT count(*) FROM registry_report").fetchone()[0]
        errored_checks = conn.execute(
            "SELECT count(*) FROM registry_checkresult WHERE status = 'error'").fetchone()[0]
        errors = Counter(e for (e,) in conn.execute(
            "SELECT left(error, 90) FROM registry_checkresult WHERE status = 'error'").fetchall())
    stuck = Counter(f"{status} {done}/{expected}" for _, status, _, done, expected, _ in rows
                    if status not in TERMINAL)
    failed = Counter(code for _, status, code, _, _, _ in rows if status == "failed")
    inconclusive = with_errors = wrong = 0
    for vid, _, _, _, _, envelope in rows:
        if envelope is None:
            continue
        pred = _statement(envelope)["predicate"]
        verdict = pred["verdict"]
        if _is_inconclusive(verdict):
            inconclusive += 1
            continue
        with_errors += any(c["decision"] == "error" for c in pred["checks"])
        expected = marked_owner.get(subs.accepted.get(vid, ""), "unknown")
        if expected != "unknown" and verdict.get("owner_keyid") != expected:
            wrong += 1
    lost = sum(1 for vid, status, *_ in rows if vid in subs.accepted and status not in TERMINAL)
    return {
        "verifications_in_db": len(rows),
        "reports": reports,
        "done": sum(1 for r in rows if r[1] == "done"),
        "failed": dict(failed),
        "stuck": sum(stuck.values()),
        "stuck_by_state": dict(stuck),
        "accepted_without_outcome": lost,
        "duplicates": {"check_rows": dup_checks, "reports": dup_reports,
                       "report_log_entries_beyond_reports": report_entries - reports},
        "inconclusive": inconclusive,
        "signed_with_errored_checks": with_errors,
        "wrong_verdicts": wrong,
        "errored_check_rows": errored_checks,
        "check_errors": dict(errors.most_common(5)),
    }


def run(cfg: Config, workdir: Path | None = None, keep: bool = False) -> dict[str, Any]:
    """The whole benchmark; returns the results (also printed)."""
    from bench import fixtures, logcheck
    from bench.machine import machine
    from registry.demo import serve_folder
    from verifier.evidence.identity import Identity

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="hm-chaos-", dir=workdir))
    root.chmod(0o755)  # the `postgres` user must reach its cluster folder inside
    say(f"training {cfg.models} marked model(s) and writing the suspects, meanwhile starting…")
    trained: dict[str, Any] = {}
    phases: dict[str, float] = {}

    def train() -> None:
        try:
            trained["marked"], _ = fixtures.make_suspects(root / "served", cfg.models)
        except BaseException as e:  # noqa: BLE001 (re-raised below)
            trained["error"] = e

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    stack = Stack(root / "stack", workers=cfg.workers, concurrency=cfg.concurrency,
                  web_workers=cfg.web_workers,
                  volatile_redis=cfg.volatile_redis, env=cfg.env)
    stack.keep = keep
    try:
        with stack, serve_folder(root / "served") as files:
            trainer.join()
            if "error" in trained:
                raise trained["error"]
            reg = fixtures.register(stack.url, files, trained["marked"])
            marked_owner = {s.name: s.owner_keyid for s in reg.suspects}
            phases["start"] = time.monotonic() - started
            say(f"submitting {cfg.verifications} verifications ({cfg.submit_threads} client threads); "
                f"faults: {', '.join(cfg.events)}")
            t0 = time.monotonic()
            faults = Faults(stack, cfg, t0)
            faults.start()
            done = threading.Event()
            box: dict[str, Submissions] = {}

            def burst() -> None:
                try:
                    box["s"] = _submit_burst(stack, reg.token, reg.suspects, cfg.verifications,
                                             cfg.submit_threads)
                finally:
                    done.set()

            threading.Thread(target=burst, daemon=True).start()
            drained, counts = _drain(stack, faults, done, cfg, t0)
            faults.join(timeout=120)
            if faults.error is not None:
                raise RuntimeError(f"a fault could not be injected: {faults.error!r}")
            subs = box["s"]
            say(f"burst: {len(subs.accepted)} accepted in {subs.finished - subs.started:.1f}s, "
                f"errors {dict(subs.errors)}, retries {subs.retries}; "
                + (f"drained in {drained:.1f}s" if drained is not None else
                   f"NOT drained {cfg.deadline:.0f}s after the last fault"))
            phases["burst_and_drain"] = time.monotonic() - started - phases["start"]
            account = _account(stack, subs, marked_owner)
            registry_key = Identity.from_seed(stack.signing_seed).public_key
            with stack.db() as conn:
                log = logcheck.check(conn, stack.url, registry_key)
            restarts = {name: n - 1 for name, n in stack.started.items() if name.startswith("worker")}
            # every worker we killed was started again at once: a dead one died by itself
            died = {name: p.returncode for name, p in stack.procs.items() if p.poll() is not None}
    finally:
        if not keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    fired = [e for e in faults.log if "skipped" not in e]
    kills = sum(1 for e in fired if e.get("killed"))
    result = {
        "config": asdict(cfg),
        "beat": stack.has_beat,
        "submitted": len(subs.accepted),
        "submit_errors": dict(subs.errors),
        "submit_retries": subs.retries,
        "burst_seconds": round(subs.finished - subs.started, 1),
        "faults": faults.log,
        "kills_under_load": kills,
        "redis_restarts_under_load": sum(1 for e in fired if e["event"] == "redis"),
        "postgres_restarts_under_load": sum(1 for e in fired if e["event"] == "postgres"),
        "worker_restarts": restarts,
        "processes_dead_at_the_end": died,
        "workers_exited_by_themselves": stack.self_exits,
        "drain_seconds": None if drained is None else round(drained, 1),
        **account,
        "log": log,
        "seconds": round(time.monotonic() - started, 1),
        "seconds_by_phase": {"start_and_register": round(phases["start"], 1),
                             "burst_and_drain": round(phases["burst_and_drain"], 1),
                             "checks_and_stop": round(time.monotonic() - started - phases["start"]
                                                      - phases["burst_and_drain"], 1)},
        "machine": machine(),
    }
    dup = sum(account["duplicates"].values())
    result["faults_skipped"] = len(faults.log) - len(fired)
    result["ok"] = bool(drained is not None and account["stuck"] == 0 and dup == 0
                        and result["faults_skipped"] == 0
                        and account["accepted_without_outcome"] == 0 and log["ok"]
                        and log["reports_in_checkpoint"] == account["reports"]
                        and account["wrong_verdicts"] == 0
                        and account["signed_with_errored_checks"] == 0)
    return result


def summary(r: dict[str, Any]) -> str:
    log = r["log"]
    lines = [
        f"submitted              {r['submitted']} (errors {r['submit_errors'] or 'none'}, "
        f"{r['submit_retries']} client retries)",
        f"faults under load      {r['kills_under_load']} worker kills, "
        f"{r['redis_restarts_under_load']} Redis and {r['postgres_restarts_under_load']} PostgreSQL "
        f"restarts; {r['faults_skipped']} skipped (drained before them: raise --verifications)",
        f"reports                {r['reports']} (failed {r['failed'] or 'none'})",
        f"stuck after deadline   {r['stuck']} {r['stuck_by_state'] or ''}",
        f"duplicates             {r['duplicates']}",
        f"inconclusive           {r['inconclusive']}; signed with errored checks "
        f"{r['signed_with_errored_checks']}; wrong verdicts {r['wrong_verdicts']}",
        f"check errors           {r['check_errors'] or 'none'}",
        f"exited by themselves   {len(r['workers_exited_by_themselves'])} worker(s) "
        f"{sorted({e['reason'][-70:] for e in r['workers_exited_by_themselves']}) or ''}"
        + (" (restarted as a supervisor would)" if r["config"]["supervise"] else "")
        + (f"; dead at the end: {r['processes_dead_at_the_end']}" if r["processes_dead_at_the_end"]
           else ""),
        "time to drain          " + (f"{r['drain_seconds']} s" if r["drain_seconds"] is not None
                                    else f"not drained ({r['config']['deadline']:.0f} s deadline)"),
        f"log                    {'consistent' if log['ok'] else 'INCONSISTENT'}: "
        f"checkpoint of {log['checkpoint_size']} entries, root recomputed "
        f"{'matches' if log['root_matches'] else 'DIFFERS'}, {log['reports_in_checkpoint']}/"
        f"{log['reports']} reports in it, {log['inclusion_proofs_verified']} inclusion proofs "
        f"verified, {log['audits_ok']}/{log['audited']} reports audited",
        f"verdict                {'OK' if r['ok'] else 'FAILED'}",
    ]
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CI size: 120 verifications, 2 kills")
    parser.add_argument("--verifications", type=int, help="burst size")
    parser.add_argument("--deadline", type=float, help="seconds allowed for the drain after the faults")
    parser.add_argument("--workers", type=int, help="celery worker processes (≥ 2)")
    parser.add_argument("--faults", help="comma-separated schedule of child, main, redis, "
                        "postgres (default: the full or the small schedule)")
    parser.add_argument("--volatile-redis", action="store_true",
                        help="Redis without an append-only file: its crash loses the queue")
    parser.add_argument("--json", type=Path, help="write the results here (default: "
                        "bench/results/chaos.json for the full run, nowhere for --small)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs)")
    parser.add_argument("--no-supervise", action="store_true",
                        help="leave a worker that exited by itself dead (default: start it again)")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so every process is stopped and the cluster deleted.
    signal.signal(signal.SIGTERM, _interrupt)
    cfg = Config.small() if args.small else Config()
    for name in ("verifications", "deadline", "workers"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.faults is not None:
        cfg.events = [f for f in args.faults.split(",") if f]
        unknown = set(cfg.events) - {"child", "main", "redis", "postgres"}
        if unknown:
            parser.error(f"unknown fault(s) {', '.join(sorted(unknown))}; use child, main, redis, postgres")
    cfg.volatile_redis = args.volatile_redis
    cfg.supervise = not args.no_supervise
    result = run(cfg, keep=args.keep)
    out = args.json or (None if args.small else RESULTS / "chaos.json")
    if out is not None:
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
