"""safetensors headers: strict JSON, every tensor entry checked, entries tiling the data buffer.

Shared by `safetensors_format` (local files) and `ranged` (range reads of remote shards).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from verifier.models.errors import ModelFormatError, is_int, show
from verifier.models.limits import LoadLimits

ST_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1), "U16": (torch.uint16, 2), "U32": (torch.uint32, 4),
    "U64": (torch.uint64, 8), "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
}
ST_FIX = "re-save the weights with safetensors.torch.save_file"


@dataclass(frozen=True)
class Entry:
    """One tensor's header entry, validated."""

    name: str  # tensor name as in the file
    dtype: str  # safetensors dtype code, e.g. "F32"
    shape: tuple[int, ...]  # dimensions
    begin: int  # first byte in the data buffer
    end: int  # one past the last byte in the data buffer


def parse_json_object(raw: bytes, what: str, fix: str) -> dict[str, Any]:
    """Strict JSON: UTF-8, an object at the top, no duplicate keys, no NaN/Infinity tokens."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ModelFormatError(f"{what} repeats the key {show(k)}; {fix}")
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


def validate_entries(header: Mapping[str, Any], buffer_len: int, limits: LoadLimits,
                     what: str) -> list[Entry]:
    """Check every tensor entry and that the entries tile the data buffer exactly."""
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        raise ModelFormatError(f"{what} has a __metadata__ that is not a string-to-string map; "
                               f"{ST_FIX}")
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
                f"{what}: tensor {show(e.name)} (bytes {e.begin}-{e.end}) overlaps tensor "
                f"{show(prev)} (ending at byte {pos}); offsets must tile the data buffer "
                f"without overlap; {ST_FIX}")
        if e.begin > pos:
            raise ModelFormatError(
                f"{what}: bytes {pos}-{e.begin} of the data buffer belong to no tensor (a gap "
                f"before {show(e.name)}); offsets must tile the buffer exactly; {ST_FIX}")
        pos, prev = e.end, e.name
    if pos != buffer_len:
        raise ModelFormatError(
            f"{what}: the tensors cover {pos} bytes but the data buffer holds {buffer_len}; "
            f"offsets must tile the buffer exactly; {ST_FIX}")
    return entries


def _entry(name: str, info: Any, what: str) -> Entry:
    """One validated header entry: known dtype, non-negative integer shape, consistent size."""
    shown = show(name)
    if not name:
        raise ModelFormatError(f"{what} has a tensor with an empty name; {ST_FIX}")
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ModelFormatError(f"{what}: the entry of tensor {shown} must have exactly dtype, "
                               f"shape and data_offsets; {ST_FIX}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in ST_DTYPES:
        raise ModelFormatError(f"{what}: tensor {shown} has unknown dtype {show(dtype)}; expected "
                               f"one of {', '.join(ST_DTYPES)}")
    if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
        raise ModelFormatError(f"{what}: tensor {shown} has shape {show(shape)}; a shape is a list "
                               f"of non-negative integers; {ST_FIX}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise ModelFormatError(f"{what}: tensor {shown} has data_offsets {show(offsets)}; "
                               f"expected [begin, end] with 0 <= begin <= end; {ST_FIX}")
    expected = math.prod(shape) * ST_DTYPES[dtype][1]
    if offsets[1] - offsets[0] != expected:
        raise ModelFormatError(
            f"{what}: tensor {shown} is {dtype} with shape {shape}, which needs {expected} bytes, "
            f"but its data_offsets span {offsets[1] - offsets[0]}; {ST_FIX}")
    return Entry(name, dtype, tuple(shape), offsets[0], offsets[1])
