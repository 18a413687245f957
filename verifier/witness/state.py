"""The witness's durable state: the latest cosigned (size, root) of each log, in a JSON file.

Writes are atomic (a temporary file in the same folder, fsync, rename, fsync of the folder),
and `WitnessState.update` holds an exclusive lock (a thread lock plus `flock` on "<file>.lock")
across read-check-write, so two requests (or two witness processes on one file) can never roll
a log back (c2sp.org/tlog-witness: check the old size and persist the new checkpoint atomically).

File format (UTF-8 JSON):
    {"format": "hallmark/witness-state/v1",
     "logs": {"<origin>": {"size": N, "root": "<base64 root hash>"}}}
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64, unb64_strict

STATE_FORMAT = "hallmark/witness-state/v1"
T = TypeVar("T")


@dataclass(frozen=True)
class Latest:
    """The latest checkpoint a witness cosigned for one log (size 0: none yet)."""

    size: int
    root: bytes | None  # None while size is 0 and nothing was cosigned


class WitnessState:
    """The state file of one witness.

    Example:
        >>> import tempfile, pathlib
        >>> s = WitnessState(pathlib.Path(tempfile.mkdtemp()) / "state.json")
        >>> s.update(lambda logs: (logs.__setitem__("o", Latest(1, bytes(32))), "ok")[1])
        'ok'
        >>> s.read()["o"].size
        1
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> dict[str, Latest]:
        """The state as stored (an empty map when the file does not exist yet)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise EvidenceError(f"cannot read witness state {self.path}: {e.strerror}") from None
        try:
            doc = json.loads(raw)
            if doc.get("format") != STATE_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            return {origin: Latest(int(v["size"]),
                                   unb64_strict(v["root"], "root", 32) if v["root"] else None)
                    for origin, v in doc["logs"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, EvidenceError) as e:
            raise EvidenceError(f"witness state {self.path} is corrupt ({e}); restore it from a "
                                "backup: starting afresh would let the log roll back") from None

    @property
    def evidence_path(self) -> Path:
        """Where refused, validly signed checkpoints are kept ("<file>.refused.jsonl")."""
        return self.path.with_name(self.path.name + ".refused.jsonl")

    def record_refusal(self, status: int, old_size: int, note: str) -> None:
        """Keep a checkpoint the log signed but the witness refused (409 fork, 422 rewrite):
        with the cosigned one, it proves the log signed two inconsistent trees."""
        line = json.dumps({"status": status, "old": old_size, "note": note}) + "\n"
        with open(self.evidence_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def update(self, change: Callable[[dict[str, Latest]], T]) -> T:
        """Run `change` on the state under an exclusive lock and persist what it leaves."""
        with self._locked():
            logs = self.read()
            before = dict(logs)
            result = change(logs)
            if logs != before:
                self._write(logs)
            return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _write(self, logs: dict[str, Latest]) -> None:
        doc = {"format": STATE_FORMAT,
               "logs": {o: {"size": v.size, "root": b64(v.root) if v.root else ""}
                        for o, v in sorted(logs.items())}}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dirfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
