"""A private scaled-mode Hallmark for benchmarks: its own PostgreSQL cluster and Redis server,
gunicorn, celery beat (when the code has a beat schedule) and N celery workers, each worker
with its own HALLMARK_DATA_DIR (shared-nothing, as on separate hosts).

Everything lives under one temporary folder and listens on 127.0.0.1 only, on free ports.
The machine's shared PostgreSQL and Redis are never touched. `Stack` is a context manager:
on exit (normal, exception or Ctrl-C) it kills every process it started and deletes the
cluster. PostgreSQL refuses to run as root, so as root the cluster is made and run as the
`postgres` system user (`runuser`).

Example:
    with Stack(Path("/tmp/hm"), workers=2) as s:
        s.kill_worker(0)        # kill -9 a worker's main process and its children
        s.start_worker(0)
        s.restart_postgres()    # pg_ctl restart -m immediate
"""
from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psutil
import psycopg

PG_USER = "postgres"
QUEUE = "hallmark"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 (a service that is still starting raises anything)
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s")


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no initdb: install PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
    return Path(initdb).parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (initdb, trust auth, 127.0.0.1:port)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.sockets = root / "pgsock"
        self.port = free_port()
        self.bin = _pg_bin()
        self.url = f"postgres://{PG_USER}@127.0.0.1:{self.port}/hallmark"

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # postgres refuses root
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        done = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done

    def start(self) -> None:
        for d in (self.root, self.sockets):
            d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            for d in (self.root, self.sockets):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "-A", "trust", "--no-sync",
                  "-E", "UTF8")
        opts = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", opts,
                  "-w", "-t", "60", "start")
        with psycopg.connect(self.admin_dsn, autocommit=True) as c:
            c.execute("CREATE DATABASE hallmark")

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres connect_timeout=5"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=hallmark connect_timeout=5"

    def restart_immediate(self) -> None:
        """`pg_ctl restart -m immediate`: a crash (no checkpoint) followed by WAL recovery."""
        # -l: the new postmaster must not inherit our output pipe (run() would wait for it)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"),
                  "-m", "immediate", "-w", "-t", "60", "restart")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30",
                          "stop", check=False)
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            proc = psutil.Process(pid)
            if self.data.name in " ".join(proc.cmdline()) or proc.name() == "postgres":
                proc.kill()
        except (OSError, ValueError, IndexError, psutil.Error):
            pass


class PrivateRedis:
    """A redis-server on 127.0.0.1:port with an append-only file, as docker-compose runs it
    (`--appendonly yes`); `volatile=True` runs without persistence (a crash loses the queue)."""

    def __init__(self, root: Path, volatile: bool = False) -> None:
        self.root = root
        self.port = free_port()
        self.volatile = volatile
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 (kept open for the child)
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no" if self.volatile else "yes",
             "--dir", str(self.root)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.ping, "redis-server", 20)

    def ping(self) -> bool:
        import redis

        return bool(redis.Redis(port=self.port, host="127.0.0.1", socket_timeout=2).ping())

    def queue_length(self) -> int:
        import redis

        try:
            return int(redis.Redis(port=self.port, host="127.0.0.1", socket_timeout=2).llen(QUEUE))
        except redis.RedisError:
            return -1

    def crash_restart(self) -> None:
        """kill -9 the server, then start it again on the same port and folder."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class Stack:
    """web + beat + N workers on a private PostgreSQL and Redis (see the module docstring)."""

    def __init__(self, root: Path, workers: int = 2, concurrency: int = 2, web_workers: int = 2,
                 env: dict[str, str] | None = None, volatile_redis: bool = False) -> None:
        self.root = root
        self.workers = workers
        self.concurrency = concurrency
        self.web_workers = web_workers
        self.pg = PrivatePostgres(root / "pg")
        self.redis = PrivateRedis(root / "redis", volatile=volatile_redis)
        self.web_port = free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.signing_seed = os.urandom(32)  # the registry's Ed25519 seed, shared by every process
        self.master_key = os.urandom(32)
        self.extra_env = env or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.started: dict[str, int] = {}  # name -> times started
        self._log_offset: dict[str, int] = {}  # name -> log size at its last start
        self.keep = False  # keep the folder (logs, cluster files) after stop
        self.has_beat = False
        self.startup_seconds = 0.0  # migrated, web up and every worker ready
        self.lock = threading.RLock()  # held while a worker is killed or (re)started
        self.self_exits: list[dict[str, object]] = []  # workers that exited without being killed
        self.queues = [QUEUE]  # every queue the workers consume (the code's task routes)

    # --- environment ------------------------------------------------------------------------

    def env(self, data_dir: Path) -> dict[str, str]:
        b64 = base64.b64encode
        return {**os.environ, "DATABASE_URL": self.pg.url, "CELERY_BROKER_URL": self.redis.url,
                "HALLMARK_DATA_DIR": str(data_dir), "HALLMARK_QUEUE": QUEUE,
                "HALLMARK_SIGNING_KEY": b64(self.signing_seed).decode(),
                "HALLMARK_MASTER_KEY": b64(self.master_key).decode(),
                "HALLMARK_FETCH_ALLOW_LOOPBACK": "1",  # the suspects are served on 127.0.0.1
                "DJANGO_SETTINGS_MODULE": "registry.settings", "PYTHONUNBUFFERED": "1",
                # one benchmark client submits hundreds of scans of one loopback host: lift the
                # per-account and per-host throttles (their counters live in this Redis, db 1)
                "HALLMARK_CACHE_URL": self.redis.url[:-1] + "1",
                "HALLMARK_RATE_SUBMIT": "1000000/hour", "HALLMARK_RATE_SUSPECT_HOST": "1000000/min",
                "HALLMARK_RATE_SIGNUP": "1000/hour", "HALLMARK_RATE_UPLOAD": "1000/hour",
                **self.extra_env}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child)
        proc = subprocess.Popen([sys.executable, *args], env=self.env(folder), cwd=folder,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        self.started[name] = self.started.get(name, 0) + 1
        return proc

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> Stack:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # the `postgres` user must reach its cluster folder
        say(f"starting a private PostgreSQL cluster (initdb) on 127.0.0.1:{self.pg.port}…")
        self.pg.start()
        say(f"starting a private redis-server on 127.0.0.1:{self.redis.port}…")
        self.redis.start()
        (self.root / "migrate").mkdir(exist_ok=True)
        t0 = time.monotonic()
        # The web and the workers start (importing Django and torch) while the migration runs;
        # nothing queries a table before a request or a task, which come after it. Beat, whose
        # sweeper does, starts once the schema is there.
        migrate = subprocess.Popen([sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
                                   env=self.env(self.root / "migrate"))
        try:
            self.has_beat, self.queues = self._probe()
            self._spawn("web", ["-m", "gunicorn", "registry.wsgi", "-b",
                                f"127.0.0.1:{self.web_port}", "-w", str(self.web_workers),
                                "--timeout", "60"])
            for i in range(self.workers):
                self.start_worker(i)
        finally:
            if migrate.wait(timeout=300) != 0:
                raise RuntimeError(f"migrate failed with exit code {migrate.returncode}")
        if self.has_beat:
            self._spawn("beat", ["-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO",
                                 "-s", str(self.root / "beat" / "celerybeat-schedule")])
        wait_for(self._web_up, "gunicorn", 60)
        for i in range(self.workers):
            self.wait_worker_ready(i)
        self.startup_seconds = round(time.monotonic() - t0, 1)
        say(f"stack up in {self.startup_seconds}s (migration included): web {self.url}, "
            f"{self.workers} workers × {self.concurrency} on "
            f"{','.join(self.queues)}, "
            f"beat {'yes' if self.has_beat else 'no (no beat schedule in this code)'}")
        return self

    def _probe(self) -> tuple[bool, list[str]]:
        """(does the code have a beat schedule?, the queues its tasks are routed to)."""
        # the settings module alone (no Django app loading, no torch): about 1 CPU-s less
        code = ("import json, registry.settings as s; g = lambda n, d=None: getattr(s, n, d); "
                "print(json.dumps([bool(g('CELERY_BEAT_SCHEDULE')), sorted({g('CELERY_TASK_"
                "DEFAULT_QUEUE', 'celery')} | {r['queue'] for r in (g('CELERY_TASK_ROUTES') "
                "or {}).values() if isinstance(r, dict) and 'queue' in r})]))")
        probe = subprocess.run([sys.executable, "-c", code], env=self.env(self.root / "migrate"),
                               capture_output=True, text=True, timeout=120, check=True)
        beat, queues = json.loads(probe.stdout.strip().splitlines()[-1])
        return beat, queues

    def _web_up(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.web_port)) == 0

    def worker_name(self, i: int) -> str:
        return f"worker{i}"

    def start_worker(self, i: int, concurrency: int | None = None) -> None:
        name = self.worker_name(i)
        self._log_offset[name] = len(self.log(name))
        self._spawn(name, ["-m", "celery", "-A", "workers", "worker", "-n", f"{name}@%h",
                           "-c", str(concurrency or self.concurrency), "-O", "fair",
                           "-Q", ",".join(self.queues),
                           "--loglevel", "INFO", "--without-gossip", "--without-mingle"])

    def supervise(self) -> None:
        """Start again every worker that exited by itself, as a supervisor would (systemd
        `Restart=always`, compose `restart: unless-stopped`); record why it exited."""
        with self.lock:
            for i in range(self.workers):
                name = self.worker_name(i)
                proc = self.procs.get(name)
                if proc is None or proc.poll() is None:
                    continue
                tail = self.log(name)[self._log_offset.get(name, 0):]
                reason = next((line for line in reversed(tail.splitlines())
                               if "CRITICAL" in line or "Unrecoverable" in line), "")
                self.self_exits.append({"worker": name, "code": proc.returncode,
                                        "reason": reason[-200:], "at": time.strftime("%H:%M:%S")})
                say(f"{name} exited by itself ({proc.returncode}): {reason[-120:]}; starting it again")
                self.start_worker(i)

    def wait_worker_ready(self, i: int, timeout: float = 120) -> None:
        name = self.worker_name(i)
        offset = self._log_offset[name]

        def ready() -> bool:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            return " ready." in self.log(name)[offset:]

        wait_for(ready, name, timeout)

    def worker_children(self, i: int) -> list[psutil.Process]:
        proc = self.procs.get(self.worker_name(i))
        if proc is None or proc.poll() is not None:
            return []
        try:
            return psutil.Process(proc.pid).children()
        except psutil.Error:
            return []

    def kill_child(self, i: int) -> int | None:
        """kill -9 one pool child of worker i (its main process forks a new one)."""
        children = self.worker_children(i)
        if not children:
            return None
        victim = random.choice(children)
        victim.kill()
        return victim.pid

    def kill_worker(self, i: int) -> None:
        """kill -9 worker i's main process and its children (a host that dies)."""
        proc = self.procs[self.worker_name(i)]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def running(self, i: int) -> bool:
        proc = self.procs.get(self.worker_name(i))
        return proc is not None and proc.poll() is None

    def stop_worker(self, i: int, timeout: float = 30) -> None:
        """Stop worker i as an operator would (SIGTERM: warm shutdown), SIGKILL after `timeout`;
        nothing if it is not running."""
        proc = self.procs.get(self.worker_name(i))
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def restart_postgres(self) -> None:
        self.pg.restart_immediate()

    def restart_redis(self) -> None:
        self.redis.crash_restart()

    def db(self) -> psycopg.Connection:
        return psycopg.connect(self.pg.dsn, autocommit=True)

    def stop(self) -> None:
        """Kill every process group started (SIGTERM, then SIGKILL), stop the cluster, delete it."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # the group may hold orphaned pool children even when the main process is gone
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs.clear()
        self.redis.stop()
        self.pg.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            for name in self.procs:
                say(f"{name}.log, last lines:\n{self.log(name)[-1500:]}")
        self.stop()
