"""Key blobs: safetensors files (tensors + JSON metadata) with byte-for-byte deterministic bytes.

The safetensors library does not promise a stable header order, and the registry commits
to SHA-256 of these bytes, so we write the (simple, documented) format ourselves:
an 8-byte little-endian header length, a JSON header with sorted keys and no spaces,
padded with spaces to a multiple of 8 bytes, then the tensors' bytes in name order.
Reading goes through `safetensors`, which validates the header.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load as _st_load

_DTYPES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
MAX_KEY_BYTES = 256 * 1024 * 1024  # a key blob larger than this is refused


class KeyFormatError(ValueError):
    """A key blob that is not a Hallmark key (wrong format, scheme or metadata)."""


class KeyMaterialError(KeyFormatError):
    """A key whose random material is not what its seed derives: forged or edited after generation.

    Every random element of a key (bits, labels, positions, pads, dither, projections) is an
    output of the scheme's keyed DRBG over the key's seed; `Key.from_bytes` re-derives it and
    raises this error, naming the first field that differs, when the stored value does not match.

    Example:
        >>> e = KeyMaterialError("bits", "uchida"); e.field, "edited or forged" in str(e)
        ('bits', True)
    """

    def __init__(self, field: str, scheme: str) -> None:
        self.field = field
        self.scheme = scheme
        super().__init__(
            f"the {scheme} key's `{field}` are not the ones its seed derives: the key was edited "
            "or forged after generation; regenerate it with generate_key(params, seed)")


def dump(scheme: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> bytes:
    """Serialize a key deterministically.

    Args:
        scheme: the scheme's registered name, stored in the metadata.
        tensors: named tensors of the key (contiguous copies are taken, CPU only).
        meta: JSON-serializable key parameters.

    Returns:
        safetensors bytes whose metadata holds {"hallmark_scheme": scheme, "meta": <json>}.

    Example:
        >>> a = dump("uchida", {"b": torch.ones(3)}, {"T": 3})
        >>> a == dump("uchida", {"b": torch.ones(3)}, {"T": 3})
        True
    """
    header: dict[str, Any] = {"__metadata__": {
        "hallmark_scheme": scheme,
        "meta": json.dumps(meta, sort_keys=True, separators=(",", ":")),
    }}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise KeyFormatError(f"key tensor `{name}` has unsupported dtype {t.dtype}")
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def load(blob: bytes, scheme: str | None = None) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """Parse a key blob written by `dump`.

    Args:
        blob: the key file's bytes.
        scheme: if given, the scheme the key must belong to.

    Returns:
        (scheme, tensors, meta).

    Raises:
        KeyFormatError: not a safetensors key blob, no Hallmark metadata, or another scheme.
    """
    if len(blob) > MAX_KEY_BYTES:
        raise KeyFormatError(f"key blob is {len(blob)} bytes, over the {MAX_KEY_BYTES}-byte cap")
    try:
        tensors = _st_load(blob)
        (n,) = struct.unpack("<Q", blob[:8])
        metadata = json.loads(blob[8:8 + n]).get("__metadata__") or {}
        found = metadata["hallmark_scheme"]
        meta = json.loads(metadata["meta"])
    except Exception as e:  # safetensors raises its own error types; all mean "not a key"
        raise KeyFormatError(
            "not a Hallmark watermark key: expected the key file written by `hallmark "
            "watermark` (or a scheme's Key.to_bytes()); an owner signing key from `hallmark "
            f"keygen` is not a watermark key ({type(e).__name__}: {e})") from None
    if scheme is not None and found != scheme:
        raise KeyFormatError(f"key is for scheme `{found}`, expected `{scheme}`")
    return found, tensors, meta


def scheme_of(blob: bytes) -> str:
    """The scheme name stored in a key blob."""
    return load(blob)[0]
