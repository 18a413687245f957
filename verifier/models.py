"""Safe loading of suspect models: named weights and/or a runnable model from hostile files.

One entry point, `load_suspect(path)`, detects the format from the content (magic bytes and
structure, never the extension alone) and returns a `LoadedModel` whose `suspect` offers
white-box access (named tensors), black-box access (a batch predict function), or both.

Accepted formats (`LoadedModel.format`):
- "safetensors": the header is validated here before any tensor is touched (length within
  the file and capped, a JSON object without duplicate keys, offsets that exactly tile the
  data buffer, byte counts equal to dtype × shape, caps on tensor count and total bytes);
  tensors are then zero-copy views of a private memory map (pages load lazily).
- "onnx": parsed without external data; every external data location is checked (relative,
  no `..`, no symlinks or hardlinks, inside the model's folder, size caps) and read by us;
  float initializers become weights, an onnxruntime CPU session (1 thread) becomes predict.
- "torch-state-dict": `torch.load(weights_only=True)` only, in a child process with resource
  limits, which hands the tensors back as a safetensors file. TorchScript archives and
  full pickles are refused, never unpickled.
- "peft-adapter": a folder (or .zip/.tar of one) with adapter_config.json and
  adapter_model.safetensors; the weights are the adapter tensors, named as in the file.
- "bundle": a folder or .zip/.tar with one safetensors weights file and one runnable ONNX
  model of the same model; the suspect has both kinds of access.

Archives are unpacked into a scratch folder, refusing absolute or `..` members, links,
devices, duplicate names, encrypted members, too many members, and expansion past the caps
(zip bombs); the scratch folder is removed before `load_suspect` returns or raises.

Every refusal raises `ModelFormatError`, whose message names the problem, what was received,
and the fix. Nothing in this module unpickles anything in this process.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import re
import stat
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from verifier.suspect import PredictFn, Suspect

GiB = 1 << 30
FORMATS = ("safetensors", "onnx", "torch-state-dict", "peft-adapter", "bundle")
_ONNX_PROTOBUF_LIMIT = 2 * GiB - 1  # protobuf cannot hold a message of 2 GB or more
_CHUNK = 1 << 20  # bytes per read when streaming archive members
_NAN_SCAN_ELEMENTS = 1 << 24  # elements per chunk when counting NaN/Inf values
_MAX_WARNINGS = 50  # warnings beyond this are summarized in one line
_EXPORT_HINT = ("save the weights with safetensors.torch.save_file(model.state_dict(), "
                "'model.safetensors') or export the model with torch.onnx.export")


class ModelFormatError(ValueError):
    """A suspect Hallmark refuses to open. The message names the problem, what was received,
    and the fix.

    Example:
        >>> str(ModelFormatError("empty file: send a model file"))
        'empty file: send a model file'
    """


@dataclass(frozen=True)
class LoadLimits:
    """Caps applied while opening a suspect. The defaults are meant for hostile input."""

    max_file_bytes: int = 8 * GiB  # any single file: the suspect, an archive member, external data
    max_header_bytes: int = 100_000_000  # safetensors JSON header (the safetensors library's cap)
    max_tensors: int = 100_000  # tensors in one weights file or ONNX model
    max_total_tensor_bytes: int = 8 * GiB  # all tensor bytes of one suspect
    max_archive_members: int = 10_000  # entries (files and folders) in a .zip/.tar or a folder
    max_expanded_bytes: int = 8 * GiB  # bytes written when unpacking one archive
    max_compression_ratio: float = 200.0  # zip member size / compressed size, for members > 1 MiB
    max_path_depth: int = 16  # folder nesting inside an archive or a model folder
    max_json_bytes: int = 1_000_000  # adapter_config.json
    torch_memory_bytes: int = 4 * GiB  # address space the torch.load child may add after start-up
    torch_cpu_seconds: int = 120  # CPU time of the torch.load child (RLIMIT_CPU)
    torch_wall_seconds: float = 300.0  # wall time before the torch.load child is killed
    onnx_threads: int = 1  # onnxruntime intra-op threads
    onnx_external_data_beside_file: bool = False  # a bare .onnx file may read data files next to it


@dataclass
class LoadedModel:
    """What `load_suspect` found: the suspect, its format, warnings and JSON-safe details."""

    suspect: Suspect  # white-box and/or black-box access
    format: str  # one of FORMATS
    warnings: list[str] = field(default_factory=list)  # e.g. "tensor 'fc1.weight' has 12 NaN values"
    details: dict[str, Any] = field(default_factory=dict)  # sizes, ONNX I/O, adapter config, archive stats


def load_suspect(path: str | os.PathLike[str], limits: LoadLimits = LoadLimits(), *,
                 scratch_dir: str | os.PathLike[str] | None = None) -> LoadedModel:
    """Open a suspect model file, folder or archive without trusting it.

    Args:
        path: a file (safetensors, ONNX, torch state dict, .zip/.tar) or a folder
            (PEFT adapter, ONNX with external data, weights + ONNX bundle).
        limits: caps on sizes, counts and the torch.load child's resources.
        scratch_dir: where archives are unpacked and the torch.load child writes
            (default: the system temp folder); nothing is left there afterwards.

    Returns:
        A LoadedModel; `suspect.has_weights` / `suspect.has_predict` tell which access it offers.

    Raises:
        ModelFormatError: the input is refused; the message says why and how to fix it.

    Example:
        >>> from safetensors.torch import save_file
        >>> save_file({"w": torch.ones(2, 2)}, "/tmp/w.safetensors")
        >>> m = load_suspect("/tmp/w.safetensors")
        >>> m.format, sorted(m.suspect.weights)
        ('safetensors', ['w'])
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise ModelFormatError(f"cannot open the suspect {_show(p.name)}: {e.strerror}; "
                               "check that the file was fetched") from None
    scratch = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
    if stat.S_ISDIR(st.st_mode):
        return _load_folder(p, limits)
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"the suspect {_show(p.name)} is not a regular file (a device, "
                               "pipe or socket); send a model file")
    _check_size(st.st_size, limits.max_file_bytes, f"the suspect {_show(p.name)}")
    kind = _sniff(p, st.st_size)
    if kind == "safetensors":
        tensors, warnings, info = _read_safetensors(p, limits, "the suspect")
        return LoadedModel(Suspect.from_weights(tensors), "safetensors", warnings,
                           {"bytes": st.st_size, **info})
    if kind == "onnx":
        folder = p.parent if limits.onnx_external_data_beside_file else None
        return _load_onnx_model(p, folder, limits)
    if kind in ("torch-zip", "pickle"):
        return _load_torch(p, st.st_size, limits, scratch, use_mmap=kind == "torch-zip")
    # a .zip or .tar of a folder
    with tempfile.TemporaryDirectory(dir=scratch, prefix="hallmark-unpack-") as tmp:
        root = Path(tmp) / "unpacked"
        root.mkdir()
        unpack = _unpack_zip if kind == "zip" else _unpack_tar
        stats = unpack(p, root, limits)
        loaded = _load_folder(root, limits)
    loaded.details["archive"] = {"kind": kind, "bytes": st.st_size, **stats}
    return loaded


# ---------------------------------------------------------------------------------------------
# Detection


_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
               b"\x28\xb5\x2f\xfd": "zstd", b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!": "rar"}


def _sniff(p: Path, size: int) -> str:
    """The kind of a file from its first bytes: safetensors, onnx, torch-zip, pickle, zip, tar."""
    name = _show(p.name)
    if size == 0:
        raise ModelFormatError(f"the suspect {name} is an empty file (0 bytes); "
                               "send a safetensors, ONNX or PyTorch weights file")
    with open(p, "rb") as f:
        head = f.read(512)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip_kind(p)
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    for magic, what in _COMPRESSED.items():
        if head.startswith(magic):
            raise ModelFormatError(
                f"the suspect {name} is a {what}-compressed file; compressed archives are "
                "refused (their expanded size is unknown until unpacked): send the model "
                "file itself, or a .zip or uncompressed .tar of its folder")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head.startswith(b"GGUF"):
        raise ModelFormatError(f"the suspect {name} is a GGUF file, which Hallmark does not "
                               f"read; {_EXPORT_HINT}")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        raise ModelFormatError(f"the suspect {name} is an HDF5 (Keras .h5) file, which Hallmark "
                               "does not read; export the model to ONNX (e.g. with tf2onnx)")
    if head[:1] == b"\x08":  # ONNX ModelProto starts with field 1 (ir_version) as a varint
        return "onnx"
    raise ModelFormatError(
        f"the suspect {name} ({size} bytes, starting {head[:8].hex()}) is not a recognized model "
        "format; send safetensors weights, an ONNX model, a PyTorch state dict saved with "
        "torch.save, a PEFT adapter folder, or a .zip/.tar of weights + ONNX")


def _zip_kind(p: Path) -> str:
    """torch-zip for torch.save archives, zip for other archives; TorchScript is refused."""
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()[:100_000]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelFormatError(f"the suspect {_show(p.name)} looks like a zip archive but cannot "
                               f"be read ({e}); re-create the archive") from None
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    for top in tops:
        if f"{top}/constants.pkl" in names or any(n.startswith(f"{top}/code/") for n in names):
            raise ModelFormatError(
                f"the suspect {_show(p.name)} is a TorchScript archive; TorchScript archives are "
                "refused (loading them runs their code): export the weights with "
                "safetensors.torch.save_file or the model with torch.onnx.export")
        if f"{top}/data.pkl" in names:
            return "torch-zip"
    return "zip"


# ---------------------------------------------------------------------------------------------
# safetensors

_ST_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1), "U16": (torch.uint16, 2), "U32": (torch.uint32, 4),
    "U64": (torch.uint64, 8), "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}
_ST_FIX = "re-save the weights with safetensors.torch.save_file"


@dataclass(frozen=True)
class _Entry:
    """One tensor's header entry, validated."""

    name: str  # tensor name as in the file
    dtype: str  # safetensors dtype code, e.g. "F32"
    shape: tuple[int, ...]  # dimensions
    begin: int  # first byte in the data buffer
    end: int  # one past the last byte in the data buffer


def _read_safetensors(p: Path, limits: LoadLimits, label: str
                      ) -> tuple[dict[str, torch.Tensor], list[str], dict[str, Any]]:
    """Validate a safetensors file's header, then map its tensors without copying.

    Rules: 8-byte little-endian header length N with 8 + N <= file size and N <= the cap;
    the header is UTF-8 JSON, an object without duplicate keys; each tensor entry has exactly
    dtype, shape and data_offsets; end - begin == prod(shape) × dtype size; sorted by offset the
    tensors tile the data buffer exactly (no gap, no overlap, nothing after the last one).

    Returns:
        (name -> tensor, warnings about NaN/Inf values, details).
    """
    what = f"{label} {_show(p.name)}"
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ModelFormatError(f"{what} is {size} bytes, too short for a safetensors file "
                                   f"(8-byte header length first); {_ST_FIX}")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise ModelFormatError(
                f"{what} declares a {n}-byte safetensors header, past the end of the "
                f"{size}-byte file (truncated or forged); {_ST_FIX}")
        if n > limits.max_header_bytes:
            raise ModelFormatError(
                f"{what} has a {n}-byte safetensors header, over the {limits.max_header_bytes}"
                f"-byte cap; {_ST_FIX} (real headers are a few kilobytes per thousand tensors)")
        raw = f.read(n)
    header = _parse_json_object(raw, f"the safetensors header of {what}", _ST_FIX)
    buffer_len = size - 8 - n
    entries = _validate_entries(header, buffer_len, limits, what)
    tensors = _map_tensors(p, entries, data_start=8 + n)
    warnings = _nonfinite_warnings(tensors)
    meta = header.get("__metadata__") or {}
    return tensors, warnings, {"tensors": len(tensors), "tensor_bytes": buffer_len,
                               "parameters": sum(t.numel() for t in tensors.values()),
                               "metadata_keys": sorted(meta)[:50]}


def _parse_json_object(raw: bytes, what: str, fix: str) -> dict[str, Any]:
    """Strict JSON: UTF-8, an object at the top, no duplicate keys, no NaN/Infinity tokens."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ModelFormatError(f"{what} repeats the key {_show(k)}; {fix}")
            out[k] = v
        return out

    def no_constants(token: str) -> Any:
        raise ModelFormatError(f"{what} contains the non-JSON value {token}; {fix}")

    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates,
                         parse_constant=no_constants)
    except UnicodeDecodeError:
        raise ModelFormatError(f"{what} is not UTF-8 text; {fix}") from None
    except RecursionError:
        raise ModelFormatError(f"{what} is nested too deeply to be a model header; {fix}") from None
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{what} is not valid JSON ({e.msg} at byte {e.pos}); {fix}") from None
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{what} is JSON but not an object (got {type(obj).__name__}); {fix}")
    return obj


def _validate_entries(header: Mapping[str, Any], buffer_len: int, limits: LoadLimits,
                      what: str) -> list[_Entry]:
    """Check every tensor entry and that the entries tile the data buffer exactly."""
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        raise ModelFormatError(f"{what} has a __metadata__ that is not a string-to-string map; "
                               f"{_ST_FIX}")
    count = len(header) - (1 if "__metadata__" in header else 0)
    if count > limits.max_tensors:
        raise ModelFormatError(f"{what} holds {count} tensors, over the cap of "
                               f"{limits.max_tensors}; split the model or raise the cap")
    if buffer_len > limits.max_total_tensor_bytes:
        raise ModelFormatError(f"{what} holds {buffer_len} bytes of tensors, over the cap of "
                               f"{limits.max_total_tensor_bytes} bytes")
    entries = [_entry(name, info, what) for name, info in header.items() if name != "__metadata__"]
    pos, prev = 0, None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin < pos:
            raise ModelFormatError(
                f"{what}: tensor {_show(e.name)} (bytes {e.begin}-{e.end}) overlaps tensor "
                f"{_show(prev)} (ending at byte {pos}); offsets must tile the data buffer "
                f"without overlap; {_ST_FIX}")
        if e.begin > pos:
            raise ModelFormatError(
                f"{what}: bytes {pos}-{e.begin} of the data buffer belong to no tensor (a gap "
                f"before {_show(e.name)}); offsets must tile the buffer exactly; {_ST_FIX}")
        pos, prev = e.end, e.name
    if pos != buffer_len:
        raise ModelFormatError(
            f"{what}: the tensors cover {pos} bytes but the data buffer holds {buffer_len}; "
            f"offsets must tile the buffer exactly; {_ST_FIX}")
    return entries


def _entry(name: str, info: Any, what: str) -> _Entry:
    """One validated header entry: known dtype, non-negative integer shape, consistent size."""
    shown = _show(name)
    if not name:
        raise ModelFormatError(f"{what} has a tensor with an empty name; {_ST_FIX}")
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ModelFormatError(f"{what}: the entry of tensor {shown} must have exactly dtype, "
                               f"shape and data_offsets; {_ST_FIX}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
        raise ModelFormatError(f"{what}: tensor {shown} has unknown dtype {_show(dtype)}; expected "
                               f"one of {', '.join(_ST_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ModelFormatError(f"{what}: tensor {shown} has shape {_show(shape)}; a shape is a list "
                               f"of non-negative integers; {_ST_FIX}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise ModelFormatError(f"{what}: tensor {shown} has data_offsets {_show(offsets)}; "
                               f"expected [begin, end] with 0 <= begin <= end; {_ST_FIX}")
    expected = math.prod(shape) * _ST_DTYPES[dtype][1]
    if offsets[1] - offsets[0] != expected:
        raise ModelFormatError(
            f"{what}: tensor {shown} is {dtype} with shape {shape}, which needs {expected} bytes, "
            f"but its data_offsets span {offsets[1] - offsets[0]}; {_ST_FIX}")
    return _Entry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _map_tensors(p: Path, entries: list[_Entry], data_start: int) -> dict[str, torch.Tensor]:
    """Zero-copy tensors over a private (copy-on-write) memory map of the file.

    A tensor whose bytes are not aligned to its element size, and every BOOL tensor, is
    copied instead (misaligned views and bytes other than 0/1 in bool storage are unsafe).
    """
    out: dict[str, torch.Tensor] = {}
    mm = None
    if any(e.end > e.begin for e in entries):
        with open(p, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    for e in entries:
        dtype, itemsize = _ST_DTYPES[e.dtype]
        numel = math.prod(e.shape)
        if numel == 0 or mm is None:
            out[e.name] = torch.empty(e.shape, dtype=dtype)
            continue
        offset = data_start + e.begin
        if dtype == torch.bool:
            raw = torch.frombuffer(mm, dtype=torch.uint8, count=numel, offset=offset)
            out[e.name] = (raw != 0).reshape(e.shape)
            continue
        t = torch.frombuffer(mm, dtype=dtype, count=numel, offset=offset).reshape(e.shape)
        out[e.name] = t.clone() if offset % itemsize else t
    return out


def _nonfinite_warnings(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """One warning per floating tensor holding NaN or infinite values (they are accepted)."""
    warnings: list[str] = []
    for name, t in tensors.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        flat, nan, inf = t.reshape(-1), 0, 0
        for i in range(0, flat.numel(), _NAN_SCAN_ELEMENTS):
            chunk = flat[i:i + _NAN_SCAN_ELEMENTS]
            if chunk.element_size() == 1:  # float8 types lack isnan on CPU
                chunk = chunk.float()
            if bool(torch.isfinite(chunk).all()):  # one pass in the common case
                continue
            nan += int(torch.isnan(chunk).sum())
            inf += int(torch.isinf(chunk).sum())
        if nan:
            warnings.append(f"tensor {_show(name)} has {nan} NaN values")
        if inf:
            warnings.append(f"tensor {_show(name)} has {inf} infinite values")
    if len(warnings) > _MAX_WARNINGS:
        warnings = warnings[:_MAX_WARNINGS] + [f"... and {len(warnings) - _MAX_WARNINGS} more "
                                               "tensors with NaN or infinite values"]
    return warnings


# ---------------------------------------------------------------------------------------------
# ONNX

_ONNX_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
_ONNX_FIX = ("keep external data files inside the model's folder and send the folder as a .zip "
             "or .tar (onnx.save_model(model, 'model.onnx', save_as_external_data=True, "
             "location='model.onnx.data'))")


def _load_onnx_model(p: Path, folder: Path | None, limits: LoadLimits) -> LoadedModel:
    """An ONNX model: float initializers as weights and an onnxruntime session as predict."""
    model, info = _read_onnx(p, folder, limits)
    weights = _onnx_weights(model)
    predict, io, warnings = _onnx_session(model, limits)
    if not weights and predict is None:
        raise ModelFormatError(f"the ONNX model {_show(p.name)} has no float weights and "
                               f"onnxruntime cannot run it ({'; '.join(warnings)}); send a "
                               "runnable model")
    details = {**info, "weights": len(weights), "io": io}
    return LoadedModel(Suspect(weights or None, predict, description="onnx model"), "onnx",
                       warnings, details)


def _read_onnx(p: Path, folder: Path | None, limits: LoadLimits) -> tuple[Any, dict[str, Any]]:
    """Parse an ONNX file without external data, then inline its checked external data."""
    import onnx

    what = f"the ONNX model {_show(p.name)}"
    size = p.stat().st_size
    _check_size(size, min(limits.max_file_bytes, _ONNX_PROTOBUF_LIMIT), what)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others; all mean "not ONNX"
        raise ModelFormatError(f"{what} is not a valid ONNX model ({type(e).__name__}); export "
                               "it with torch.onnx.export") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelFormatError(f"{what} parses but has no graph nodes, so it is not an ONNX "
                               "model; export it with torch.onnx.export")
    try:
        tensors = list(_onnx_tensors(model))
    except RecursionError:
        raise ModelFormatError(f"{what} nests subgraphs too deeply; simplify the model") from None
    if len(tensors) > limits.max_tensors:
        raise ModelFormatError(f"{what} holds {len(tensors)} tensors, over the cap of "
                               f"{limits.max_tensors}")
    external = _inline_external_data(tensors, folder, limits, what)
    total = model.ByteSize()
    if total > limits.max_total_tensor_bytes or total > _ONNX_PROTOBUF_LIMIT:
        raise ModelFormatError(f"{what} is {total} bytes with its external data, over the cap of "
                               f"{min(limits.max_total_tensor_bytes, _ONNX_PROTOBUF_LIMIT)} bytes "
                               "(models of 2 GB or more cannot run in memory)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # onnx.checker.ValidationError and protobuf errors
        raise ModelFormatError(f"{what} fails onnx.checker ({_show(str(e), 200)}); re-export "
                               "it with torch.onnx.export") from None
    info = {"bytes": size, "external_data_bytes": external, "ir_version": int(model.ir_version),
            "opsets": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip()[:100]}
    return model, info


def _onnx_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse tensors, node attributes, subgraphs."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for a in node.attribute:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        sparse = ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors)
        for s in sparse:
            yield from (s.values, s.indices)
        if a.HasField("g"):
            yield from _graph_tensors(a.g)
        for g in a.graphs:
            yield from _graph_tensors(g)


def _inline_external_data(tensors: list[Any], folder: Path | None, limits: LoadLimits,
                          what: str) -> int:
    """Replace every external data reference by the checked bytes; returns the bytes read."""
    import onnx

    total = 0
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            if len(t.external_data):
                raise ModelFormatError(f"{what}: tensor {_show(t.name)} lists external data but "
                                       f"is not marked external; {_ONNX_FIX}")
            continue
        fields = [(e.key, e.value) for e in t.external_data]
        keys = [k for k, _ in fields]
        if len(set(keys)) != len(keys) or not set(keys) <= _ONNX_EXTERNAL_KEYS:
            raise ModelFormatError(f"{what}: tensor {_show(t.name)} has external data fields "
                                   f"{_show(keys)}; only location, offset, length and checksum "
                                   f"are allowed; {_ONNX_FIX}")
        info = dict(fields)
        location = info.get("location", "")
        if folder is None:
            raise ModelFormatError(
                f"{what} uses external data ({_show(location)} for tensor {_show(t.name)}) but "
                "was received as a single file: send the model folder as a .zip or .tar, or save "
                "the model without external data (onnx.save_model(model, path, "
                "save_as_external_data=False)) when it is under 2 GB")
        data = _read_external(folder, location, info, t, limits, what)
        total += len(data)
        if total > limits.max_total_tensor_bytes:
            raise ModelFormatError(f"{what}: external data exceeds the cap of "
                                   f"{limits.max_total_tensor_bytes} bytes")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
    return total


def _read_external(folder: Path, location: str, info: Mapping[str, str], t: Any,
                   limits: LoadLimits, what: str) -> bytes:
    """The bytes of one external data reference, read only from a regular file inside `folder`."""
    from onnx import helper

    where = f"{what}: external data location {_show(location)} of tensor {_show(t.name)}"
    parts = _relative_parts(location, where, _ONNX_FIX, limits.max_path_depth)
    path = _inside(folder, parts, where, _ONNX_FIX)
    offset = _nonneg_int(info.get("offset", "0"), f"{where} has offset", _ONNX_FIX)
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        raise ModelFormatError(f"{where}: tensor type {t.data_type} cannot be stored as external "
                               f"data; {_ONNX_FIX}") from None
    expected = math.prod(t.dims) * itemsize
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise ModelFormatError(f"{where} is not a plain file (a hardlink or special file); "
                                   f"{_ONNX_FIX}")
        _check_size(st.st_size, limits.max_file_bytes, where)
        length = _nonneg_int(info.get("length", str(max(0, st.st_size - offset))),
                             f"{where} has length", _ONNX_FIX)
        if offset + length > st.st_size:
            raise ModelFormatError(f"{where} asks for bytes {offset}-{offset + length} of a "
                                   f"{st.st_size}-byte file; {_ONNX_FIX}")
        if length != expected:
            raise ModelFormatError(f"{where} is {length} bytes but the tensor's type and shape "
                                   f"need {expected}; {_ONNX_FIX}")
        return os.pread(fd, length, offset) if length else b""
    finally:
        os.close(fd)


def _onnx_weights(model: Any) -> dict[str, torch.Tensor]:
    """Float initializers as named tensors (names as exported: torch.onnx.export keeps
    parameter names such as "fc1.weight"; integer shape constants are left out)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    floats = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    out: dict[str, torch.Tensor] = {}
    for init in model.graph.initializer:
        if init.data_type not in floats or not init.name:
            continue
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.BFLOAT16:
            arr = arr.astype(np.float32)
        out[init.name] = torch.from_numpy(np.array(arr, copy=True))
    return out


def _onnx_session(model: Any, limits: LoadLimits
                  ) -> tuple[PredictFn | None, dict[str, Any], list[str]]:
    """An onnxruntime CPU session as a predict function, or (None, …, [why]) if it cannot run."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = limits.onnx_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        return None, {}, [f"onnxruntime cannot load the model ({_show(str(e), 200)}); only "
                          "white-box checks apply"]
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    io = {"inputs": [{"name": i.name[:100], "type": i.type, "shape": _dims(i.shape)} for i in inputs],
          "outputs": [{"name": o.name[:100], "type": o.type, "shape": _dims(o.shape)}
                      for o in outputs]}
    if len(inputs) != 1 or inputs[0].type not in _ORT_FLOAT_INPUTS:
        return None, io, [f"the ONNX model takes {len(inputs)} input(s) of type "
                          f"{inputs[0].type if inputs else 'none'}; black-box checks need one "
                          "float tensor input, so only white-box checks apply"]
    return _OrtPredict(sess, inputs[0], outputs[0].name), io, []


_ORT_FLOAT_INPUTS = {"tensor(float)": "float32", "tensor(double)": "float64",
                     "tensor(float16)": "float16"}


class _OrtPredict:
    """Batch predict through an onnxruntime session: (N, ...) inputs -> (N, C) float32 logits.

    Inputs are reshaped to the model's static trailing dimensions when the element counts
    match (e.g. (N, 64) -> (N, 1, 8, 8)); a model exported with a fixed batch size b is run
    in chunks of b, the last chunk zero-padded and the padding dropped.
    """

    def __init__(self, sess: Any, inp: Any, out_name: str) -> None:
        self.sess, self.in_name, self.out_name = sess, inp.name, out_name
        self.dtype = _ORT_FLOAT_INPUTS[inp.type]
        shape = list(inp.shape)
        self.batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
        trailing = shape[1:]
        self.trailing = trailing if all(isinstance(d, int) and d > 0 for d in trailing) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        n = int(x.shape[0])
        arr = x.detach().cpu().numpy().astype(self.dtype)  # (N, ...)
        if self.trailing is not None and arr[0:1].size == math.prod(self.trailing):
            arr = arr.reshape(n, *self.trailing)
        if self.batch is None:
            out = self._run(arr)
        else:
            chunks = []
            for i in range(0, n, self.batch):
                part = arr[i:i + self.batch]
                pad = self.batch - part.shape[0]
                if pad:
                    part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
                chunks.append(self._run(part)[:self.batch - pad])
            out = np.concatenate(chunks)
        if out.shape[0] != n:
            raise ModelFormatError(f"the ONNX model returned {out.shape[0]} rows for {n} inputs; "
                                   "export it with a dynamic batch dimension")
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(n, -1)

    def _run(self, arr: Any) -> Any:
        import numpy as np

        return np.asarray(self.sess.run([self.out_name], {self.in_name: arr})[0])


def _dims(shape: Any) -> list[Any]:
    return [d if isinstance(d, int) else str(d)[:40] for d in list(shape or [])]


# ---------------------------------------------------------------------------------------------
# PyTorch state dicts, via torch.load(weights_only=True) in a child process

_CHILD_CODE = "import verifier.models as m; m._torch_child_main()"


def _load_torch(p: Path, size: int, limits: LoadLimits, scratch: Path, use_mmap: bool
                ) -> LoadedModel:
    """Load a torch.save file in a resource-limited child that returns tensors as safetensors."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix="hallmark-torch-") as tmp:
        out = Path(tmp) / "weights.safetensors"
        cmd = [sys.executable, "-I", "-c", _CHILD_CODE, str(p.resolve()), str(out),
               str(limits.torch_memory_bytes + (size if use_mmap else 0)),
               str(limits.torch_cpu_seconds), str(min(limits.max_total_tensor_bytes + 2 * GiB,
                                                      2**62)), "1" if use_mmap else "0"]
        env = {"PATH": os.environ.get("PATH", os.defpath), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1", "LC_ALL": "C.UTF-8"}
        try:
            proc = subprocess.run(cmd, env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=limits.torch_wall_seconds)
        except subprocess.TimeoutExpired:
            raise ModelFormatError(
                f"loading the PyTorch file {_show(p.name)} took longer than "
                f"{limits.torch_wall_seconds:g} s and was stopped; {_EXPORT_HINT}") from None
        status = _child_status(proc)
        if not status.get("ok"):
            raise ModelFormatError(_child_refusal(p.name, status, proc.returncode, limits))
        tensors, warnings, info = _read_safetensors(out, limits, "the state dict of")
    raw_notes = status.get("notes")
    notes: list[Any] = raw_notes if isinstance(raw_notes, list) else []
    warnings = [re.sub(r"[^\x20-\x7e]", "", str(n))[:200] for n in notes][:_MAX_WARNINGS] + warnings
    return LoadedModel(Suspect.from_weights(tensors), "torch-state-dict", warnings,
                       {"bytes": size, "container": "zip" if use_mmap else "legacy pickle",
                        **info})


def _child_status(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The child's one-line JSON verdict (the last stdout line), or {} if there is none."""
    lines = proc.stdout[-65536:].decode("utf-8", "replace").strip().splitlines()
    try:
        status = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return status if isinstance(status, dict) else {}


def _child_refusal(name: str, status: Mapping[str, Any], returncode: int,
                   limits: LoadLimits) -> str:
    """The user-facing message for a torch.load child that refused or died."""
    what, kind = f"the PyTorch file {_show(name)}", status.get("kind")
    detail = re.sub(r"[^\w .,:()-]", "", str(status.get("detail", "")))[:200]
    if kind == "weights_only":
        return (f"{what} is a pickle that torch.load(weights_only=True) refuses ({detail}); full "
                "pickles are never opened because unpickling them can run code: "
                f"{_EXPORT_HINT}")
    if kind == "torchscript":
        return (f"{what} is a TorchScript archive; TorchScript archives are refused (loading them "
                "runs their code): export the weights with safetensors.torch.save_file or the "
                "model with torch.onnx.export")
    if kind == "not_state_dict":
        return f"{what} does not hold a state dict ({detail}); {_EXPORT_HINT}"
    if kind == "memory" or returncode in (-9,):
        return (f"loading {what} needed more than its memory budget of "
                f"{limits.torch_memory_bytes} bytes; {_EXPORT_HINT}")
    if returncode in (-24, 152):  # SIGXCPU
        return (f"loading {what} used more than {limits.torch_cpu_seconds} s of CPU and was "
                f"stopped; {_EXPORT_HINT}")
    if kind == "invalid":
        return f"{what} is not a readable torch.save file ({detail}); {_EXPORT_HINT}"
    return (f"loading {what} failed (loader exit code {returncode}); {_EXPORT_HINT}")


def _torch_child_main() -> None:  # pragma: no cover - runs in the child process
    """Child entry point: rlimits, torch.load(weights_only=True), state dict -> safetensors.

    argv: source, output, memory budget (bytes above start-up), CPU seconds, output size cap,
    use_mmap ("1" for zip archives). Prints one JSON line: {"ok": true, "notes": [...]} or
    {"ok": false, "kind": ..., "detail": ...}. It never calls pickle itself and never retries
    with weights_only=False.
    """
    import pickle
    import resource

    from safetensors.torch import save_file

    src, out, mem, cpu, fsize, use_mmap = sys.argv[1:7]
    torch.set_num_threads(1)

    def report(**status: Any) -> None:
        print(json.dumps(status), flush=True)
        raise SystemExit(0)

    vm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                vm = int(line.split()[1]) * 1024
    limit = vm + int(mem)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize), int(fsize)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True, mmap=use_mmap == "1")
    except pickle.UnpicklingError as e:
        report(ok=False, kind="weights_only", detail=_weights_only_reason(str(e)))
    except MemoryError:
        report(ok=False, kind="memory", detail="")
    except RuntimeError as e:
        if "TorchScript" in str(e):
            report(ok=False, kind="torchscript", detail="")
        report(ok=False, kind="invalid", detail=str(e).splitlines()[0][:200] if str(e) else "")
    except Exception as e:  # any other parse failure is a refusal, never a fallback
        report(ok=False, kind="invalid", detail=f"{type(e).__name__}: {str(e)[:200]}")
    try:
        state, notes = _state_dict_of(obj)
    except ValueError as e:
        report(ok=False, kind="not_state_dict", detail=str(e))
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, out)
    except MemoryError:
        report(ok=False, kind="memory", detail="")
    report(ok=True, notes=notes)


def _weights_only_reason(message: str) -> str:
    """The specific reason in a weights_only refusal (never torch's advice to disable it)."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"it references the Python object {m.group(1)}"
    m = re.search(r"Unsupported operand (\d+)", message)
    if m:
        return f"it uses pickle opcode {m.group(1)}, which weights-only loading does not allow"
    return "it is not a weights-only pickle"


def _state_dict_of(obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a loaded object: a name -> tensor mapping, possibly wrapped once under
    "state_dict", "model" or "model_state_dict" (as training checkpoints do)."""
    notes: list[str] = []
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                notes.append(f"used the checkpoint's {key!r} entry as the state dict")
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"it holds a {type(obj).__name__}, not a mapping of names to tensors")
    state: dict[str, torch.Tensor] = {}
    skipped = 0
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            skipped += 1
            continue
        if v.layout != torch.strided or v.is_quantized:
            raise ValueError(f"tensor {k[:80]!r} is {v.layout} / quantized; save dense tensors")
        state[k] = v
    if not state:
        raise ValueError("it holds no named tensors")
    if skipped:
        notes.append(f"ignored {skipped} entries that are not named tensors")
    return state, notes


# ---------------------------------------------------------------------------------------------
# Archives and folders

_ARCHIVE_FIX = ("repack the model folder with relative paths and plain files only "
                "(e.g. `cd model && zip -r ../model.zip .`)")


def _unpack_zip(p: Path, dest: Path, limits: LoadLimits) -> dict[str, int]:
    """Unpack a zip archive into `dest`, refusing anything unsafe (see `load_suspect`)."""
    what = f"the archive {_show(p.name)}"
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelFormatError(f"{what} is not a readable zip ({e}); {_ARCHIVE_FIX}") from None
    with zf:
        infos = zf.infolist()
        _check_count(len(infos), limits, what)
        _check_zip_layout(infos, what)
        seen: set[str] = set()
        declared = 0
        for info in infos:
            member = f"{what}: member {_show(info.filename)}"
            parts = _relative_parts(info.filename, member, _ARCHIVE_FIX, limits.max_path_depth)
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
            parts = _relative_parts(info.filename, "", "", limits.max_path_depth)
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
                                           f"{what}: member {_show(info.filename)}")
            except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, ValueError) as e:
                raise ModelFormatError(f"{what}: member {_show(info.filename)} is corrupt ({e}); "
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


def _unpack_tar(p: Path, dest: Path, limits: LoadLimits) -> dict[str, int]:
    """Unpack an uncompressed tar into `dest`, refusing links, devices and unsafe paths."""
    import tarfile

    what = f"the archive {_show(p.name)}"
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
            _check_count(count, limits, what)
            member = f"{what}: member {_show(m.name)}"
            parts = _relative_parts(m.name, member, _ARCHIVE_FIX, limits.max_path_depth)
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


def _check_count(count: int, limits: LoadLimits, what: str) -> None:
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


def _relative_parts(name: str, where: str, fix: str, max_depth: int) -> list[str]:
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


def _inside(folder: Path, parts: list[str], where: str, fix: str) -> Path:
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


def _scan_folder(root: Path, limits: LoadLimits) -> list[PurePosixPath]:
    """Every regular file under `root` (relative paths); links and special files are refused."""
    files: list[PurePosixPath] = []
    count = 0
    stack: list[tuple[Path, PurePosixPath]] = [(root, PurePosixPath())]
    while stack:
        folder, rel = stack.pop()
        if len(rel.parts) > limits.max_path_depth:
            raise ModelFormatError(f"the model folder nests more than {limits.max_path_depth} "
                                   "folders deep; send only the model files")
        with os.scandir(folder) as it:
            for entry in it:
                count += 1
                _check_count(count, limits, "the model folder")
                shown = _show(str(rel / entry.name))
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise ModelFormatError(f"the model folder holds a symbolic link ({shown}); "
                                           "links are refused: copy the file itself")
                if stat.S_ISDIR(st.st_mode):
                    stack.append((Path(entry.path), rel / entry.name))
                elif stat.S_ISREG(st.st_mode):
                    if st.st_nlink != 1:
                        raise ModelFormatError(f"the model folder holds a hard link ({shown}); "
                                               "links are refused: copy the file itself")
                    files.append(rel / entry.name)
                else:
                    raise ModelFormatError(f"the model folder holds a special file ({shown}); "
                                           "send only plain files")
    return files


def _load_folder(root: Path, limits: LoadLimits) -> LoadedModel:
    """A model folder: a PEFT adapter, an ONNX model (with external data), safetensors
    weights, or a bundle of safetensors weights + an ONNX model."""
    files = _scan_folder(root, limits)
    base = PurePosixPath()
    while True:  # an archive of a folder holds one top-level folder: descend into it
        tops = {f.relative_to(base).parts[0] for f in files if f.is_relative_to(base)}
        top = base / next(iter(tops)) if len(tops) == 1 else None
        if top is None or any(f == top for f in files):
            break
        base = top
    folder = root.joinpath(*base.parts)
    top_files = sorted(f.name for f in files if f.parent == base)
    if "adapter_config.json" in top_files:
        return _load_adapter(folder, top_files, limits)
    weights, onnx_files, pickles = [], [], []
    for name in top_files:
        kind = _sniff_member(folder / name)
        if kind == "safetensors":
            weights.append(name)
        elif kind == "onnx" and name.lower().endswith(".onnx"):
            onnx_files.append(name)
        elif kind in ("pickle", "torch-zip"):
            pickles.append(name)
    if len(weights) > 1 or len(onnx_files) > 1:
        raise ModelFormatError(
            f"the model folder holds {len(weights)} safetensors files and {len(onnx_files)} ONNX "
            f"models ({_show(', '.join(weights + onnx_files), 200)}); send one weights file "
            "and/or one ONNX model (sharded checkpoints are not supported: merge the shards)")
    notes = [f"ignored {_show(n)}: pickle files inside a folder or archive are never opened"
             for n in pickles]
    if not weights and not onnx_files:
        raise ModelFormatError(
            f"the model folder holds no safetensors weights, ONNX model or PEFT adapter (files: "
            f"{_show(', '.join(top_files), 200)}); {_EXPORT_HINT}"
            + (" (pickled weights are refused inside archives)" if pickles else ""))
    if onnx_files and not weights:
        loaded = _load_onnx_model(folder / onnx_files[0], folder, limits)
    elif weights and not onnx_files:
        tensors, warnings, info = _read_safetensors(folder / weights[0], limits, "the weights")
        loaded = LoadedModel(Suspect.from_weights(tensors), "safetensors", warnings, info)
    else:
        loaded = _load_bundle(folder, weights[0], onnx_files[0], limits)
    loaded.warnings[:0] = notes
    loaded.details["files"] = [n[:200] for n in top_files[:50]]
    return loaded


def _sniff_member(p: Path) -> str:
    """The kind of one file inside a model folder ("other" for anything not a model)."""
    try:
        return _sniff(p, p.stat().st_size)
    except ModelFormatError:
        return "other"


def _load_bundle(folder: Path, weights_name: str, onnx_name: str, limits: LoadLimits
                 ) -> LoadedModel:
    """Safetensors weights (white-box) + an ONNX model of the same model (black-box).

    Initializers that share a name with a weight must have its shape and values (within
    1e-5 relative); a bundle whose ONNX model contradicts its weights is refused.
    """
    tensors, warnings, info = _read_safetensors(folder / weights_name, limits, "the weights")
    model, onnx_info = _read_onnx(folder / onnx_name, folder, limits)
    predict, io, onnx_warnings = _onnx_session(model, limits)
    if predict is None:
        raise ModelFormatError(f"the bundle's ONNX model {_show(onnx_name)} cannot run "
                               f"({'; '.join(onnx_warnings)}); a bundle needs a runnable model")
    onnx_weights = _onnx_weights(model)
    common = sorted(set(tensors) & set(onnx_weights))
    worst = 0.0
    for name in common:
        a, b = tensors[name].float(), onnx_weights[name].float()
        if a.shape != b.shape:
            raise ModelFormatError(f"the bundle's weights and ONNX model disagree: {_show(name)} "
                                   f"has shape {list(a.shape)} vs {list(b.shape)}; export both "
                                   "from the same model")
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        scale = float(a.abs().max()) if a.numel() else 0.0
        if not diff <= 1e-5 * (1.0 + scale):  # also catches NaN differences
            raise ModelFormatError(f"the bundle's weights and ONNX model disagree on "
                                   f"{_show(name)} (max difference {diff:.3g}); export both "
                                   "from the same model")
        worst = max(worst, diff)
    if not common:
        warnings.append("could not confirm that the bundle's ONNX model and weights are the same "
                        "model: no initializer names in common")
    suspect = Suspect(tensors, predict, description="bundle: safetensors weights + onnx model")
    details = {**info, "onnx": {**onnx_info, "io": io}, "weights_file": weights_name[:200],
               "onnx_file": onnx_name[:200],
               "consistency": {"compared": len(common), "max_abs_diff": worst}}
    return LoadedModel(suspect, "bundle", warnings, details)


_ADAPTER_FIELDS = ("base_model_name_or_path", "peft_type", "task_type", "r", "lora_alpha",
                   "lora_dropout", "target_modules", "use_dora", "use_rslora", "bias")


def _load_adapter(folder: Path, top_files: list[str], limits: LoadLimits) -> LoadedModel:
    """A PEFT LoRA adapter folder: adapter_config.json + adapter_model.safetensors."""
    fix = "save the adapter with model.save_pretrained(path) (safe_serialization=True)"
    cfg_path = folder / "adapter_config.json"
    size = cfg_path.stat().st_size
    if size > limits.max_json_bytes:
        raise ModelFormatError(f"adapter_config.json is {size} bytes, over the "
                               f"{limits.max_json_bytes}-byte cap; {fix}")
    config = _parse_json_object(cfg_path.read_bytes(), "adapter_config.json", fix)
    if config.get("peft_type") != "LORA":
        raise ModelFormatError(f"adapter_config.json has peft_type {_show(config.get('peft_type'))}"
                               "; Hallmark reads LoRA adapters only (peft_type \"LORA\")")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not (isinstance(r, int) and _is_int(r) and r > 0) or not (
            isinstance(alpha, int | float) and not isinstance(alpha, bool)):
        raise ModelFormatError(f"adapter_config.json has r={_show(r)} and lora_alpha="
                               f"{_show(alpha)}; expected a positive integer rank and a number; "
                               f"{fix}")
    targets = config.get("target_modules")
    if targets is not None and not (isinstance(targets, str) or (
            isinstance(targets, list) and all(isinstance(t, str) for t in targets))):
        raise ModelFormatError(f"adapter_config.json has target_modules {_show(targets)}; "
                               f"expected a list of module names or a pattern; {fix}")
    if "adapter_model.safetensors" not in top_files:
        pickled = "adapter_model.bin" in top_files
        raise ModelFormatError(
            "the PEFT adapter has no adapter_model.safetensors"
            + (" (adapter_model.bin is a pickle and is never opened)" if pickled else "")
            + f"; {fix}")
    tensors, warnings, info = _read_safetensors(folder / "adapter_model.safetensors", limits,
                                                "the adapter weights")
    if not any("lora_A" in n or "lora_B" in n for n in tensors):
        raise ModelFormatError("adapter_model.safetensors holds no lora_A / lora_B tensors, so it "
                               f"is not a LoRA adapter; {fix}")
    adapter = {k: _json_safe(config.get(k)) for k in _ADAPTER_FIELDS if k in config}
    suspect = Suspect.from_weights(tensors)
    suspect.description = "peft lora adapter"
    return LoadedModel(suspect, "peft-adapter", warnings, {**info, "adapter": adapter})


# ---------------------------------------------------------------------------------------------
# Small helpers


def _show(value: object, limit: int = 80) -> str:
    """A quoted, escaped, truncated rendering of an untrusted string for messages."""
    text = value if isinstance(value, str) else str(value)
    shown = repr(text[:limit])
    return shown + ("…" if len(text) > limit else "")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _nonneg_int(text: str, what: str, fix: str) -> int:
    if not re.fullmatch(r"[0-9]{1,20}", text or ""):
        raise ModelFormatError(f"{what} {_show(text)}, not a non-negative integer; {fix}")
    return int(text)


def _check_size(size: int, cap: int, what: str) -> None:
    if size > cap:
        raise ModelFormatError(f"{what} is {size} bytes, over the cap of {cap} bytes; "
                               "send a smaller model or ask the operator to raise the cap")


def _json_safe(v: Any) -> Any:
    """Config values as JSON-safe data, with strings truncated."""
    if isinstance(v, str):
        return v[:200]
    if isinstance(v, list):
        return [_json_safe(x) for x in v[:100]]
    if isinstance(v, dict):
        return {str(k)[:100]: _json_safe(x) for k, x in list(v.items())[:100]}
    if v is None or isinstance(v, bool | int | float):
        return v
    return str(v)[:200]

