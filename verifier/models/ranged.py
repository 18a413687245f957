"""Safetensors checkpoints read by byte ranges: headers first, then only the tensors asked for.

`read_header(file, size, read)` reads and validates one safetensors header through a range
reader; `RangedTensors(headers, read)` is a lazy `Mapping[str, Tensor]` over one file or the
shards of a sharded checkpoint: listing names reads nothing, and `mapping[name]` reads exactly
that tensor's bytes (`data_start + begin` to `data_start + end`), checks that the reader
returned exactly `end - begin` bytes, hashes them (SHA-256) and keeps a record. A scheme that
touches only its key's layers (uchida, seal) so reads those layers and nothing else.

`evidence()` states exactly what was verified: per file the SHA-256 of the header bytes
(the 8-byte length and the JSON) and the file size; per tensor read the file, byte range and
SHA-256; bytes read and bytes in the checkpoint. `subject_digest(evidence)` is the digest a
signed report binds (construction in docs/evidence.md, "Range-read subjects"):

    SHA-256( "hallmark/range-subject/v1\\n"
             ‖ for each file read whole, sorted by name: "file <file> <size> <sha256>\\n"
             ‖ for each header, sorted by file:   "header <file> <size> <header sha256>\\n"
             ‖ for each tensor, sorted by (file, name):
                                 "tensor <file> <name> <begin> <end> <sha256>\\n" )

Names and files are JSON-escaped strings (so a newline in a name cannot forge a line).
The same functions over a local copy (`local_reader(folder)`) re-check it offline.

Example:
    >>> import torch, io
    >>> from safetensors.torch import save
    >>> blob = save({"w": torch.ones(2, 2), "b": torch.zeros(2)})
    >>> read = lambda f, a, b: blob[a:b]
    >>> t = RangedTensors([read_header("m.safetensors", len(blob), read)], read)
    >>> sorted(t), t["w"].sum().item(), t.evidence()["bytes_read"] < len(blob)
    (['b', 'w'], 4.0, True)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from verifier.models.errors import ModelFormatError, show
from verifier.models.limits import LoadLimits
from verifier.models.safetensors_header import (
    ST_DTYPES,
    ST_FIX,
    Entry,
    parse_json_object,
    validate_entries,
)

Reader = Callable[[str, int, int], bytes]  # (file, begin, end) -> bytes [begin, end) of the file
SUBJECT_DOMAIN = b"hallmark/range-subject/v1\n"
_RANGED_LIMITS = LoadLimits(max_total_tensor_bytes=1 << 50)  # no wall: only what is read counts


@dataclass(frozen=True)
class ShardHeader:
    """One safetensors file's validated header, read by range."""

    file: str  # path in the repo, e.g. "model-00001-of-00004.safetensors"
    size: int  # bytes in the whole file
    data_start: int  # 8 + header length: where the data buffer begins
    sha256: str  # SHA-256 of bytes [0, data_start): the length prefix and the JSON header
    entries: tuple[Entry, ...]  # validated; offsets tile the data buffer exactly


def read_header(file: str, size: int, read: Reader,
                limits: LoadLimits = _RANGED_LIMITS) -> ShardHeader:  # noqa: B008 - frozen
    """Read and validate the header of the safetensors file `file` of `size` bytes.

    Args:
        file: the file's name in the checkpoint (for messages and evidence).
        size: the whole file's size, as the server or the file system states it.
        read: the range reader.
        limits: header and tensor-count caps (the total tensor bytes are not capped here).

    Returns:
        A ShardHeader.

    Raises:
        ModelFormatError: a header that is short, over the cap, past the end of the file, not
            strict JSON, or whose offsets do not tile the rest of the file exactly.
    """
    what = f"the safetensors file {show(file)}"
    if size < 8:
        raise ModelFormatError(f"{what} is {size} bytes, too short for a safetensors file; "
                               f"{ST_FIX}")
    prefix = _exactly(read, file, 0, 8)
    (n,) = struct.unpack("<Q", prefix)
    if n > size - 8:
        raise ModelFormatError(f"{what} declares a {n}-byte header, past the end of the "
                               f"{size}-byte file (truncated or forged); {ST_FIX}")
    if n > limits.max_header_bytes:
        raise ModelFormatError(f"{what} has a {n}-byte header, over the "
                               f"{limits.max_header_bytes}-byte cap; {ST_FIX}")
    raw = _exactly(read, file, 8, 8 + n)
    header = parse_json_object(raw, f"the header of {what}", ST_FIX)
    entries = validate_entries(header, size - 8 - n, limits, what)
    return ShardHeader(file, size, 8 + n, hashlib.sha256(prefix + raw).hexdigest(),
                       tuple(entries))


def _exactly(read: Reader, file: str, begin: int, end: int) -> bytes:
    data = read(file, begin, end)
    if len(data) != end - begin:
        raise ModelFormatError(f"reading bytes {begin}-{end} of {show(file)} returned "
                               f"{len(data)} bytes, not {end - begin}; the file is shorter than "
                               "its header says (truncated or changed): fetch it again")
    return data


class RangedTensors(Mapping[str, torch.Tensor]):
    """Named tensors of one or more safetensors files, each read by range on first access.

    Raises ModelFormatError at construction when two files hold the same tensor name.
    """

    def __init__(self, headers: list[ShardHeader], read: Reader) -> None:
        self._headers = {h.file: h for h in headers}
        self._read = read
        self._where: dict[str, tuple[ShardHeader, Entry]] = {}
        for h in headers:
            for e in h.entries:
                if e.name in self._where:
                    raise ModelFormatError(
                        f"tensor {show(e.name)} is in both {show(self._where[e.name][0].file)} "
                        f"and {show(h.file)}; a sharded checkpoint holds each tensor once: "
                        "re-shard it")
                self._where[e.name] = (h, e)
        self._tensors: dict[str, torch.Tensor] = {}
        self._reads: dict[str, dict[str, Any]] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._tensors:
            h, e = self._where[name]  # KeyError for an unknown name, as a dict does
            self._tensors[name] = self._load(h, e)
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, from the headers (no tensor bytes are read)."""
        return {name: e.shape for name, (_, e) in self._where.items()}

    def _load(self, h: ShardHeader, e: Entry) -> torch.Tensor:
        dtype, _ = ST_DTYPES[e.dtype]
        data = _exactly(self._read, h.file, h.data_start + e.begin, h.data_start + e.end)
        self._reads[e.name] = {"file": h.file, "begin": h.data_start + e.begin,
                               "end": h.data_start + e.end,
                               "sha256": hashlib.sha256(data).hexdigest()}
        numel = math.prod(e.shape)
        if numel == 0:
            return torch.empty(e.shape, dtype=dtype)
        if dtype == torch.bool:
            return (torch.frombuffer(bytearray(data), dtype=torch.uint8) != 0).reshape(e.shape)
        return torch.frombuffer(bytearray(data), dtype=dtype).reshape(e.shape)

    def evidence(self) -> dict[str, Any]:
        """What was verified: header digests, per-tensor digests, bytes read of bytes held."""
        header_bytes = sum(h.data_start for h in self._headers.values())
        read = sum(r["end"] - r["begin"] for r in self._reads.values())
        return {"headers": {f: header_evidence(h) for f, h in sorted(self._headers.items())},
                "tensors": {n: dict(r) for n, r in sorted(self._reads.items())},
                "bytes_read": header_bytes + read,
                "bytes_total": sum(h.size for h in self._headers.values())}


def header_evidence(h: ShardHeader) -> dict[str, Any]:
    """One header's evidence entry: its SHA-256, its length in bytes and the file's size."""
    return {"sha256": h.sha256, "bytes": h.data_start, "size": h.size}


def subject_digest(evidence: Mapping[str, Any]) -> str:
    """The SHA-256 a report binds for a range-read suspect (see the module docstring).

    Example:
        >>> len(subject_digest({"headers": {}, "tensors": {}}))
        64
    """
    h = hashlib.sha256(SUBJECT_DOMAIN)
    for f, info in sorted(evidence.get("files", {}).items()):
        h.update(f"file {json.dumps(f)} {int(info['size'])} {info['sha256']}\n".encode())
    for f, info in sorted(evidence["headers"].items()):
        h.update(f"header {json.dumps(f)} {int(info['size'])} {info['sha256']}\n".encode())
    for n, r in sorted(evidence["tensors"].items(), key=lambda kv: (kv[1]["file"], kv[0])):
        h.update(f"tensor {json.dumps(r['file'])} {json.dumps(n)} {int(r['begin'])} "
                 f"{int(r['end'])} {r['sha256']}\n".encode())
    return h.hexdigest()


def merge_evidence(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One evidence record from several checks' records of the same checkpoint.

    Raises:
        ModelFormatError: two records disagree on a header or a tensor's digest (the server
            served different bytes for the same pinned commit).
    """
    out: dict[str, Any] = {"files": {}, "headers": {}, "tensors": {}}
    for part in parts:
        for kind in ("files", "headers", "tensors"):
            for k, v in part.get(kind, {}).items():
                if out[kind].setdefault(k, v) != v:
                    raise ModelFormatError(
                        f"two reads of {kind[:-1]} {show(k)} of the same commit differ "
                        f"({out[kind][k].get('sha256', '')[:16]}… vs {v.get('sha256', '')[:16]}…)"
                        "; the server changed the files: submit the repo again")
    return out


def local_reader(folder: str | os.PathLike[str]) -> Reader:
    """A range reader over a local copy of the checkpoint (for offline audit).

    Example:
        >>> read = local_reader("/tmp")  # read("model.safetensors", 0, 8) -> the first 8 bytes
    """
    root = Path(folder).resolve()

    def read(file: str, begin: int, end: int) -> bytes:
        p = (root / file).resolve()
        if not p.is_relative_to(root):
            raise ModelFormatError(f"{show(file)} is outside {show(str(root))}; evidence names "
                                   "files inside the repo only")
        with open(p, "rb") as f:
            f.seek(begin)
            return f.read(end - begin)

    return read


def recheck(evidence: Mapping[str, Any], read: Reader) -> list[str]:
    """Re-read every header and tensor named in `evidence`; the list of mismatches ([] if none).

    Example:
        >>> recheck({"headers": {}, "tensors": {}}, lambda f, a, b: b"")
        []
    """
    problems = []
    for f, info in evidence.get("files", {}).items():
        try:
            got = hashlib.sha256(read(f, 0, int(info["size"]))).hexdigest()
        except (ModelFormatError, OSError) as e:
            problems.append(f"file {f}: {e}")
            continue
        if got != info["sha256"]:
            problems.append(f"file {f}: SHA-256 {got}, the report says {info['sha256']}")
    for f, info in evidence["headers"].items():
        try:
            h = read_header(f, int(info["size"]), read)
        except (ModelFormatError, OSError) as e:
            problems.append(f"header of {f}: {e}")
            continue
        if h.sha256 != info["sha256"]:
            problems.append(f"header of {f}: SHA-256 {h.sha256}, the report says {info['sha256']}")
    for n, r in evidence["tensors"].items():
        try:
            got = hashlib.sha256(read(r["file"], int(r["begin"]), int(r["end"]))).hexdigest()
        except (ModelFormatError, OSError) as e:
            problems.append(f"tensor {n}: {e}")
            continue
        if got != r["sha256"]:
            problems.append(f"tensor {n} in {r['file']} bytes {r['begin']}-{r['end']}: SHA-256 "
                            f"{got}, the report says {r['sha256']}")
    return problems


__all__ = ["Reader", "RangedTensors", "ShardHeader", "header_evidence", "local_reader",
           "merge_evidence",
           "read_header", "recheck", "subject_digest"]
