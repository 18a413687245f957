"""safetensors: the header validated before any tensor is touched, then zero-copy tensors."""
from __future__ import annotations

import math
import mmap
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from verifier.models.errors import ModelFormatError, show
from verifier.models.limits import LoadLimits
from verifier.models.loaded import MAX_WARNINGS
from verifier.models.safetensors_header import (
    ST_DTYPES,
    ST_FIX,
    Entry,
    parse_json_object,
    validate_entries,
)

_NAN_SCAN_ELEMENTS = 1 << 24  # elements per chunk when counting NaN/Inf values


def read_safetensors(p: Path, limits: LoadLimits, label: str
                     ) -> tuple[Mapping[str, torch.Tensor], list[str], dict[str, Any]]:
    """Validate a safetensors file's header, then map its tensors without copying.

    Rules: 8-byte little-endian header length N with 8 + N <= file size and N <= the cap;
    the header is UTF-8 JSON, an object without duplicate keys; each tensor entry has exactly
    dtype, shape and data_offsets; end - begin == prod(shape) × dtype size; sorted by offset the
    tensors tile the data buffer exactly (no gap, no overlap, nothing after the last one).

    Returns:
        (name -> tensor, mapped and scanned for NaN/Inf on first access; the list of NaN/Inf
        warnings, which grows as tensors are read; details).
    """
    what = f"{label} {show(p.name)}"
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ModelFormatError(f"{what} is {size} bytes, too short for a safetensors file "
                                   f"(8-byte header length first); {ST_FIX}")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise ModelFormatError(
                f"{what} declares a {n}-byte safetensors header, past the end of the "
                f"{size}-byte file (truncated or forged); {ST_FIX}")
        if n > limits.max_header_bytes:
            raise ModelFormatError(
                f"{what} has a {n}-byte safetensors header, over the {limits.max_header_bytes}"
                f"-byte cap; {ST_FIX} (real headers are a few kilobytes per thousand tensors)")
        raw = f.read(n)
    header = parse_json_object(raw, f"the safetensors header of {what}", ST_FIX)
    buffer_len = size - 8 - n
    entries = validate_entries(header, buffer_len, limits, what)
    warnings: list[str] = []  # filled as tensors are first read (see _LazyTensors)
    tensors = _map_tensors(p, entries, 8 + n, warnings)
    meta = header.get("__metadata__") or {}
    return tensors, warnings, {"tensors": len(tensors), "tensor_bytes": buffer_len,
                               "parameters": sum(math.prod(e.shape) for e in entries),
                               "metadata_keys": sorted(meta)[:50]}


class _LazyTensors(Mapping[str, torch.Tensor]):
    """The tensors of one validated safetensors file, each mapped and scanned on first access.

    Names, order and count come from the validated header, so `in`, `len` and iteration never
    touch tensor bytes: a check that reads one layer (uchida) reads only that layer's pages.
    `self[name]` maps the tensor zero-copy over the file's private memory map and, the first
    time, counts its NaN/Inf values in one vectorized pass, adding a warning to `warnings`
    (the list `load_suspect` returns in `LoadedModel.warnings`, filled as checks read).
    """

    def __init__(self, mm: mmap.mmap | None, entries: list[Entry], data_start: int,
                 warnings: list[str]) -> None:
        self._mm, self._start = mm, data_start
        self._entries = {e.name: e for e in entries}  # header order, as dict(header) had it
        self._mapped: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()  # one scan per tensor when threads share the suspect
        self._flagged = 0  # tensors with NaN or infinite values seen so far
        self.warnings = warnings

    def __getitem__(self, name: str) -> torch.Tensor:
        t = self._mapped.get(name)
        if t is not None:
            return t
        entry = self._entries[name]  # KeyError for a name the file does not hold
        with self._lock:
            t = self._mapped.get(name)
            if t is None:
                t = _map_tensor(self._mm, entry, self._start)
                self._warn(name, *_count_nonfinite(t))
                self._mapped[name] = t
        return t

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, from the validated header (no tensor bytes are touched)."""
        return {name: e.shape for name, e in self._entries.items()}

    def _warn(self, name: str, nan: int, inf: int) -> None:
        if not (nan or inf):
            return
        self._flagged += 1
        if self._flagged > MAX_WARNINGS:  # one summary line stands for the rest
            more = (f"... and {self._flagged - MAX_WARNINGS} more tensors with NaN or "
                    "infinite values")
            if self._flagged > MAX_WARNINGS + 1:
                self.warnings[-1] = more
            else:
                self.warnings.append(more)
            return
        if nan:
            self.warnings.append(f"tensor {show(name)} has {nan} NaN values")
        if inf:
            self.warnings.append(f"tensor {show(name)} has {inf} infinite values")


def _map_tensors(p: Path, entries: list[Entry], data_start: int, warnings: list[str]
                 ) -> _LazyTensors:
    """The file's tensors over a private (copy-on-write) memory map, opened now (so a file
    unlinked after loading, as archives and the torch.load child's output are, stays readable)
    and mapped into tensors on first access."""
    mm = None
    if any(e.end > e.begin for e in entries):
        with open(p, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    return _LazyTensors(mm, entries, data_start, warnings)


def _map_tensor(mm: mmap.mmap | None, e: Entry, data_start: int) -> torch.Tensor:
    """One zero-copy tensor over the map.

    A tensor whose bytes are not aligned to its element size, and every BOOL tensor, is
    copied instead (misaligned views and bytes other than 0/1 in bool storage are unsafe).
    """
    dtype, itemsize = ST_DTYPES[e.dtype]
    numel = math.prod(e.shape)
    if numel == 0 or mm is None:
        return torch.empty(e.shape, dtype=dtype)
    offset = data_start + e.begin
    if dtype == torch.bool:
        raw = torch.frombuffer(mm, dtype=torch.uint8, count=numel, offset=offset)
        return (raw != 0).reshape(e.shape)
    t = torch.frombuffer(mm, dtype=dtype, count=numel, offset=offset).reshape(e.shape)
    return t.clone() if offset % itemsize else t


def _count_nonfinite(t: torch.Tensor) -> tuple[int, int]:
    """(NaN count, infinity count) of a tensor; (0, 0) for integer and empty tensors.

    The common all-finite case costs one sum per chunk: a NaN or an infinity among the
    operands makes an IEEE sum NaN or infinite, so a finite sum proves the chunk finite. A
    non-finite sum (including a finite chunk whose sum overflows) is then counted exactly.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return 0, 0
    flat, nan, inf = t.reshape(-1), 0, 0
    for i in range(0, flat.numel(), _NAN_SCAN_ELEMENTS):
        chunk = flat[i:i + _NAN_SCAN_ELEMENTS]
        if chunk.element_size() == 1:  # float8 types lack sum and isnan on CPU
            chunk = chunk.float()
        total = chunk.sum(dtype=torch.float64 if chunk.dtype == torch.float64 else torch.float32)
        if math.isfinite(float(total)):
            continue
        nan += int(torch.isnan(chunk).sum())
        inf += int(torch.isinf(chunk).sum())
    return nan, inf
