"""Relative paths from untrusted names, resolved only inside a model's folder."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

from verifier.models.errors import ModelFormatError


def relative_parts(name: str, where: str, fix: str, max_depth: int) -> list[str]:
    """The components of a relative POSIX path, refusing absolute paths, `..`, backslashes."""
    if "\x00" in name or "\\" in name:
        raise ModelFormatError(f"{where} contains a NUL byte or a backslash; {fix}")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ModelFormatError(f"{where} is an absolute path; {fix}")
    parts = [s for s in PurePosixPath(name).parts if s not in ("", ".")]
    if ".." in parts:
        raise ModelFormatError(f"{where} leaves its folder ('..' in the path); {fix}")
    if len(parts) > max_depth:
        raise ModelFormatError(f"{where} is nested more than {max_depth} folders deep; {fix}")
    return parts


def path_inside(folder: Path, parts: list[str], where: str, fix: str) -> Path:
    """`folder/parts…`, refusing symlinks on the way and anything resolving outside `folder`."""
    if not parts:
        raise ModelFormatError(f"{where} is empty; {fix}")
    base = folder.resolve()
    path = base
    for part in parts:
        path = path / part
        try:
            st = os.lstat(path)
        except OSError:
            raise ModelFormatError(f"{where} does not exist in the model's folder; {fix}") from None
        if stat.S_ISLNK(st.st_mode):
            raise ModelFormatError(f"{where} goes through a symbolic link; {fix}")
    if os.path.commonpath([base, path.resolve()]) != str(base):
        raise ModelFormatError(f"{where} resolves outside the model's folder; {fix}")
    return path
