"""Unpacking .zip and uncompressed .tar archives into a scratch folder, refusing anything unsafe."""
from __future__ import annotations

import stat
import zipfile
from pathlib import Path
from typing import Any

from verifier.models.errors import ModelFormatError, show
from verifier.models.limits import LoadLimits
from verifier.models.paths import relative_parts

_CHUNK = 1 << 20  # bytes per read when streaming archive members
_ARCHIVE_FIX = ("repack the model folder with relative paths and plain files only "
                "(e.g. `cd model && zip -r ../model.zip .`)")


def unpack_zip(p: Path, dest: Path, limits: LoadLimits) -> dict[str, int]:
    """Unpack a zip archive into `dest`, refusing anything unsafe (see `load_suspect`)."""
    what = f"the archive {show(p.name)}"
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelFormatError(f"{what} is not a readable zip ({e}); {_ARCHIVE_FIX}") from None
    with zf:
        infos = zf.infolist()
        check_count(len(infos), limits, what)
        _check_zip_layout(infos, what)
        seen: set[str] = set()
        declared = 0
        for info in infos:
            member = f"{what}: member {show(info.filename)}"
            parts = relative_parts(info.filename, member, _ARCHIVE_FIX, limits.max_path_depth)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ModelFormatError(f"{member} is a symbolic link; links are refused; "
                                       f"{_ARCHIVE_FIX}")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: permissions only
                raise ModelFormatError(f"{member} is a special file (device, pipe or socket); "
                                       f"{_ARCHIVE_FIX}")
            if info.flag_bits & 0x1:
                raise ModelFormatError(f"{member} is encrypted; send an unencrypted archive")
            _check_unique("/".join(parts), seen, member)
            declared += info.file_size
            _check_expansion(declared, limits, what)
            if (info.file_size > _CHUNK and info.file_size > limits.max_compression_ratio
                    * max(info.compress_size, 1)):
                raise ModelFormatError(
                    f"{member} expands {info.compress_size} bytes into {info.file_size} "
                    f"(ratio over {limits.max_compression_ratio:g}), the mark of a zip bomb; "
                    "send the files uncompressed or with ordinary compression")
        written = 0
        for info in infos:
            parts = relative_parts(info.filename, "", "", limits.max_path_depth)
            if not parts:
                continue
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src:
                    written = _copy_capped(src, target, info.file_size, written, limits, what,
                                           f"{what}: member {show(info.filename)}")
            except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, ValueError) as e:
                raise ModelFormatError(f"{what}: member {show(info.filename)} is corrupt ({e}); "
                                       f"{_ARCHIVE_FIX}") from None
    return {"members": len(infos), "expanded_bytes": written}


def _check_zip_layout(infos: list[zipfile.ZipInfo], what: str) -> None:
    """Refuse central-directory entries that share or overlap compressed data (overlap bombs)."""
    spans = sorted((i.header_offset, i.header_offset + 30 + len(i.filename.encode()) +
                    i.compress_size) for i in infos)
    for (start, end), (nxt, _) in zip(spans, spans[1:], strict=False):
        if nxt < end:
            raise ModelFormatError(
                f"{what} has entries whose data overlap (at byte {nxt}, inside the entry at "
                f"{start}), the mark of an overlapping zip bomb; {_ARCHIVE_FIX}")


def unpack_tar(p: Path, dest: Path, limits: LoadLimits) -> dict[str, int]:
    """Unpack an uncompressed tar into `dest`, refusing links, devices and unsafe paths."""
    import tarfile

    what = f"the archive {show(p.name)}"
    try:
        tf = tarfile.open(p, mode="r:")  # noqa: SIM115 - closed by the `with tf` below
    except (tarfile.TarError, OSError) as e:
        raise ModelFormatError(f"{what} is not a readable tar ({e}); {_ARCHIVE_FIX}") from None
    seen: set[str] = set()
    count = written = 0
    with tf:
        while True:
            try:
                m = tf.next()
            except tarfile.TarError as e:
                raise ModelFormatError(f"{what} is corrupt ({e}); {_ARCHIVE_FIX}") from None
            if m is None:
                break
            count += 1
            check_count(count, limits, what)
            member = f"{what}: member {show(m.name)}"
            parts = relative_parts(m.name, member, _ARCHIVE_FIX, limits.max_path_depth)
            kinds = [(m.issym(), "a symbolic link"), (m.islnk(), "a hard link"),
                     (m.ischr() or m.isblk(), "a device"), (m.isfifo(), "a pipe"),
                     (m.issparse(), "a sparse file")]
            for bad, kind in kinds:
                if bad:
                    raise ModelFormatError(f"{member} is {kind}; links and special files are "
                                           f"refused; {_ARCHIVE_FIX}")
            if not (m.isdir() or m.isreg()):
                raise ModelFormatError(f"{member} is not a plain file or folder; {_ARCHIVE_FIX}")
            if not parts:
                continue
            _check_unique("/".join(parts), seen, member)
            target = dest.joinpath(*parts)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            _check_expansion(written + m.size, limits, what)
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is None:
                raise ModelFormatError(f"{member} has no data; {_ARCHIVE_FIX}")
            try:
                with src:
                    written = _copy_capped(src, target, m.size, written, limits, what, member)
            except tarfile.TarError as e:
                raise ModelFormatError(f"{member} is corrupt ({e}); {_ARCHIVE_FIX}") from None
    return {"members": count, "expanded_bytes": written}


def _copy_capped(src: Any, target: Path, declared: int, written: int, limits: LoadLimits,
                 what: str, member: str) -> int:
    """Stream one member to a new file, never past its declared size or the expansion cap."""
    got = 0
    with open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            got += len(chunk)
            if got > declared:
                raise ModelFormatError(f"{member} expands past its declared {declared} bytes "
                                       f"(a forged size); {_ARCHIVE_FIX}")
            _check_expansion(written + got, limits, what)
            out.write(chunk)
    if got != declared:
        raise ModelFormatError(f"{member} is truncated ({got} of {declared} bytes); "
                               f"{_ARCHIVE_FIX}")
    return written + got


def check_count(count: int, limits: LoadLimits, what: str) -> None:
    if count > limits.max_archive_members:
        raise ModelFormatError(f"{what} has more than {limits.max_archive_members} entries; send "
                               "only the model files")


def _check_expansion(total: int, limits: LoadLimits, what: str) -> None:
    if total > limits.max_expanded_bytes:
        raise ModelFormatError(f"{what} expands to more than {limits.max_expanded_bytes} bytes "
                               "(a zip bomb, or a model over the cap); send only the model files")


def _check_unique(key: str, seen: set[str], member: str) -> None:
    if key in seen:
        raise ModelFormatError(f"{member} appears twice in the archive; {_ARCHIVE_FIX}")
    seen.add(key)
