"""`lsb` positions: which float32 weights carry the bits, and the masked digest of a model.

The keyed DRBG picks normal weights among the model's float32 tensors (tied tensors once);
the masked digest hashes those tensors with the marked low bits cleared, so it is the same
before and after embedding. The scheme contract lives in `verifier.schemes.lsb`, which
re-exports `LSBError` from here (defined here so both modules raise it without an import cycle).
"""
from __future__ import annotations

import bisect
import hashlib
import math
import struct
from collections.abc import Mapping

import torch

from verifier.schemes._keyed import drbg_u64


class LSBError(ValueError):
    """A model or key that the `lsb` scheme cannot use (the message says what and how to fix)."""


def _layout(weights: dict[str, torch.Tensor]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The float32 tensors that may carry bits, by name; tied (shared-storage) tensors once."""
    seen: set[tuple[int, int]] = set()
    out = []
    for name in sorted(weights):
        t = weights[name]
        if t.dtype != torch.float32 or t.numel() == 0:
            continue
        ident = (t.untyped_storage().data_ptr(), int(t.storage_offset()))
        if ident in seen:
            continue
        seen.add(ident)
        out.append((name, tuple(t.shape)))
    return tuple(out)


def _choose_positions(secret: bytes, weights: dict[str, torch.Tensor],
                      layout: tuple[tuple[str, tuple[int, ...]], ...],
                      count: int) -> tuple[tuple[str, int], ...]:
    """`count` distinct keyed positions among normal (finite, non-zero, non-subnormal) weights.

    Writing low bits into an infinity would make it a NaN, and into a zero or a subnormal
    would give a value that flush-to-zero hardware silently drops, so those are skipped.
    """
    sizes = [math.prod(s) for _, s in layout]
    total = sum(sizes)
    ints = {n: weights[n].contiguous().view(torch.int32).flatten() for n, _ in layout}
    normal = sum(int((((ints[n] >> 23) & 0xFF) % 255 != 0).sum()) for n, _ in layout)
    if normal < 2 * count:
        raise LSBError(f"the model has {normal} normal float32 weights; the key needs {count} "
                       f"positions out of at least {2 * count}: lower Params.repetitions or "
                       "raise Params.k, or sign a larger model")
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]  # first flat index of each tensor
    stream = drbg_u64(secret, b"positions")
    limit = (1 << 64) - (1 << 64) % total  # rejection keeps the draw uniform
    chosen: dict[tuple[str, int], None] = {}
    while len(chosen) < count:
        v = next(stream)
        if v >= limit:
            continue
        flat = v % total
        i = bisect.bisect_right(offsets, flat) - 1
        name, index = layout[i][0], flat - offsets[i]
        exponent = (int(ints[name][index]) >> 23) & 0xFF
        if exponent in (0, 255) or (name, index) in chosen:
            continue
        chosen[(name, index)] = None
    return tuple(chosen)


def _masked_digest(weights: Mapping[str, torch.Tensor], key_layout, positions, k: int) -> bytes:
    """SHA-256 of the layout's tensors (float32 bytes) with the k low bits at `positions` cleared.

    The layout is hashed in name order as: name, shape, then the little-endian float32 bytes,
    each length-prefixed, under the domain "hallmark/lsb/masked/v1". A tensor the suspect lacks,
    or holds with another shape, is hashed as absent: the digest then cannot match.
    """
    by_tensor: dict[str, list[int]] = {}
    for name, index in positions:
        by_tensor.setdefault(name, []).append(index)
    h = hashlib.sha256(b"hallmark/lsb/masked/v1")
    for name, shape in key_layout:
        h.update(struct.pack(">I", len(name)) + name.encode())
        t = weights.get(name)
        if t is None or tuple(t.shape) != shape:
            h.update(b"\x00absent")
            continue
        ints = t.detach().to(torch.float32).contiguous().view(torch.int32).flatten().clone()
        idx = torch.tensor(by_tensor.get(name, []), dtype=torch.int64)
        ints[idx] &= ~((1 << k) - 1)
        data = ints.numpy().astype("<i4").tobytes()
        h.update(struct.pack(">I", len(shape)) + b"".join(struct.pack(">Q", d) for d in shape))
        h.update(struct.pack(">Q", len(data)) + data)
    return h.digest()
