"""Writing outputs: never over an existing file, never half-written, secrets with mode 0600."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from verifier.owners.errors import OwnerToolError


def refuse_existing(path: Path, flag: str) -> None:
    """Raise if `path` exists: the tools never overwrite a model, a key or a report."""
    if path.exists() or path.is_symlink():
        raise OwnerToolError(f"{path} already exists; choose another {flag} (Hallmark never "
                             "overwrites a file)")


def write_secret(path: Path, data: bytes, flag: str = "--key-out") -> None:
    """Write a secret file created with mode 0600 (a watermark key, a config holding a token)."""
    refuse_existing(path, flag)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise OwnerToolError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_atomically(path: Path, flag: str, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` for a temporary file or folder beside `path`, then rename it to `path`.

    On any failure nothing is left at `path` (a half-written model is worse than none).
    """
    refuse_existing(path, flag)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OwnerToolError(f"cannot write {path}: folder {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    try:
        target = tmp / path.name
        write(target)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
