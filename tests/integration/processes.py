"""Real `celery worker` and `celery beat` processes for the fault tests, each its own "host"
(its own HALLMARK_DATA_DIR) on the test database, the test Redis and a private queue.

Every host gets the registry's secrets through the environment, as separate machines would
(they share no folder where generated secrets could live).
"""
from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection


def host_env(data_dir: Path, redis_url: str, queue: str, **extra: str) -> dict[str, str]:
    assert connection.vendor == "postgresql", "fault tests need DATABASE_URL=postgres://…"
    db = connection.settings_dict
    return {**os.environ, "CELERY_BROKER_URL": redis_url, "HALLMARK_QUEUE": queue,
            "HALLMARK_DATA_DIR": str(data_dir), "HALLMARK_FETCH_ALLOW_LOOPBACK": "1",
            "HALLMARK_MASTER_KEY": base64.b64encode(settings.HALLMARK_MASTER_KEY).decode(),
            "HALLMARK_SIGNING_KEY": base64.b64encode(settings.HALLMARK_SIGNING_KEY).decode(),
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
            **extra}


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the main process only (its children are orphaned, as after a crash)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after 30 s."""
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    self.proc.poll()
                    return
                self.proc.poll()
                time.sleep(0.1)


def _spawn(name: str, args: list[str], env: dict[str, str], log: Path) -> Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Process(name, proc, log)


def start_worker(name: str, env: dict[str, str], log: Path, concurrency: int = 1) -> Process:
    queue = env["HALLMARK_QUEUE"]
    p = _spawn(name, ["worker", "-c", str(concurrency), "-O", "fair", "-Q", f"{queue},{queue}.sweep",
                      "-n", f"{name}-{os.getpid()}@%h", "--loglevel", "INFO", "--without-gossip",
                      "--without-mingle"], env, log)
    wait_for(lambda: " ready." in p.text(), f"worker {name} ready", p, 120)
    return p


def start_beat(env: dict[str, str], log: Path) -> Process:
    p = _spawn("beat", ["beat", "-s", str(log.parent / "beat-schedule"), "--loglevel", "INFO"],
               env, log)
    wait_for(lambda: "beat: Starting" in p.text(), "beat started", p, 120)
    return p


def wait_for(ok: Callable[[], bool], what: str, process: Process | None = None,
             timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if process is not None and process.proc.poll() is not None:
            raise AssertionError(f"{process.name} exited while waiting for {what}:\n"
                                 f"{process.text()[-3000:]}")
        if time.monotonic() > deadline:
            tail = process.text()[-3000:] if process is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)
