"""`lsb` positions: which float32 weights carry the bits, and the masked digest of a model.

Positions are outputs of the keyed DRBG alone: uniform flat indices over the layout (the
model's float32 tensors, names sorted, tied tensors once), distinct, by rejection, under a
label that binds the layout. Nothing about the weights' values steers the draw, so
`Key.from_bytes` re-derives the positions from the secret and the layout, and a forger cannot
pick weights whose low bits already match (the attack of issue 9). The masked digest hashes
the layout's tensors with the marked low bits cleared, so it is the same before and after
embedding.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import struct
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from verifier.schemes._keyed import drbg_u64, secret_from_seed
from verifier.schemes.lsb.params import LSBError

Layout = tuple[tuple[str, tuple[int, ...]], ...]  # float32 tensors (name, shape), by name
Positions = tuple[tuple[str, int], ...]  # (tensor name, flat index) of each marked weight


def secret_from(seed: int | bytes) -> bytes:
    """A 32-byte key secret from an int (reproducible tests) or bytes (pass 32 random bytes)."""
    return secret_from_seed(seed, b"hallmark/lsb/seed/v1", LSBError)


def layout_of(weights: Mapping[str, torch.Tensor]) -> Layout:
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


def _layout_label(layout: Layout) -> bytes:
    """The DRBG label of the position draw: binds the layout, so each layout is a fresh draw."""
    canon = json.dumps([[n, list(s)] for n, s in layout], separators=(",", ":")).encode()
    return b"positions/" + hashlib.sha256(canon).digest()


def draw_positions(secret: bytes, layout: Layout, count: int) -> Positions:
    """`count` distinct keyed positions, uniform over the layout's weights.

    Args:
        secret: the key secret.
        layout: the model's float32 tensors (name, shape), sorted by name.
        count: positions wanted (`Params.positions`).

    Returns:
        ((tensor name, flat index), ...) in draw order.

    Raises:
        LSBError: fewer than 2 * count weights in the layout.
    """
    sizes = [math.prod(s) for _, s in layout]
    total = sum(sizes)
    if total < 2 * count:
        raise LSBError(f"the model has {total} float32 weights; the key needs {count} positions "
                       f"out of at least {2 * count} float32 weights: lower Params.repetitions "
                       "or raise Params.k, or sign a larger model")
    offsets = [0, *itertools.accumulate(sizes)][:-1]  # first flat index of each tensor
    stream = drbg_u64(secret, _layout_label(layout))
    limit = (1 << 64) - (1 << 64) % total  # rejection keeps the draw uniform
    chosen: dict[tuple[str, int], None] = {}
    while len(chosen) < count:
        v = next(stream)
        if v >= limit:
            continue
        flat = v % total
        i = bisect.bisect_right(offsets, flat) - 1
        chosen.setdefault((layout[i][0], flat - offsets[i]), None)
    return tuple(chosen)


def check_finite(weights: Mapping[str, torch.Tensor], positions: Positions) -> None:
    """Refuse to mark an infinity or a NaN: low bits written into an infinity make a NaN.

    Zeros and subnormals are marked like any weight: they become subnormals below 2**-145,
    which the model's function does not notice.

    Raises:
        LSBError: naming the first non-finite weight at a drawn position.
    """
    for name, index in positions:
        value = float(weights[name].reshape(-1)[index])
        if not math.isfinite(value):
            raise LSBError(f"weight {index} of `{name}` is {value} at a keyed position; lsb marks "
                           "finite weights only: replace non-finite weights or use another seed")


def masked_digest(weights: Mapping[str, torch.Tensor], layout: Layout, positions: Positions,
                  k: int) -> bytes:
    """SHA-256 of the layout's tensors (float32 bytes) with the k low bits at `positions` cleared.

    The layout is hashed in name order as: name, shape, then the little-endian float32 bytes,
    each length-prefixed, under the domain "hallmark/lsb/masked/v1". A tensor the suspect lacks,
    or holds with another shape, is hashed as absent: the digest then cannot match.

    The bytes go to SHA-256 straight from the tensor's memory (the memory map of a loaded
    suspect): only the 4-byte words at marked positions are copied and masked, and a tensor
    that is not contiguous float32 (an fp16 suspect, say) is converted _CHUNK elements at a
    time, so hashing never copies a whole tensor.
    """
    by_tensor: dict[str, list[int]] = {}
    for name, index in positions:
        by_tensor.setdefault(name, []).append(index)
    h = hashlib.sha256(b"hallmark/lsb/masked/v1")
    keep = ~((1 << k) - 1) & 0xFFFFFFFF  # the bits a marked word keeps
    tensors = _prefetched(weights, [name for name, _ in layout])
    for (name, shape), t in zip(layout, tensors, strict=True):
        h.update(struct.pack(">I", len(name)) + name.encode())
        if t is None or tuple(t.shape) != shape:
            h.update(b"\x00absent")
            continue
        h.update(struct.pack(">I", len(shape)) + b"".join(struct.pack(">Q", d) for d in shape))
        h.update(struct.pack(">Q", 4 * t.numel()))
        marked = sorted(by_tensor.get(name, []))
        for first, words in _float32_chunks(t.detach().reshape(-1)):
            _hash_masked(h, words, first, marked, keep)
    return h.digest()


def _prefetched(weights: Mapping[str, torch.Tensor], names: list[str]
                ) -> Iterator[torch.Tensor | None]:
    """weights.get(name) for each name in order, reading tensor i + 1 in
    a helper thread while the caller hashes tensor i: a lazily loaded suspect maps and scans
    a tensor on first read (NaN/Inf), which then overlaps with SHA-256 (which releases the GIL)
    instead of adding to it."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lsb-prefetch") as pool:
        ahead = pool.submit(weights.get, names[0]) if names else None
        for i in range(len(names)):
            assert ahead is not None
            t = ahead.result()
            if i + 1 < len(names):
                ahead = pool.submit(weights.get, names[i + 1])
            yield t


_CHUNK = 1 << 22  # elements converted at a time for a tensor that is not contiguous float32


def _float32_chunks(flat: torch.Tensor) -> Iterator[tuple[int, memoryview]]:
    """(first flat index, little-endian float32 bytes) covering a 1-D tensor: one zero-copy
    view of the whole tensor when it is contiguous float32, else converted chunks."""
    if flat.dtype == torch.float32 and flat.is_contiguous():
        yield 0, _le_bytes(flat)
        return
    for i in range(0, flat.numel(), _CHUNK):
        yield i, _le_bytes(flat[i:i + _CHUNK].to(torch.float32).contiguous())


def _le_bytes(words: torch.Tensor) -> memoryview:
    """The little-endian bytes of a contiguous float32 tensor (no copy on little-endian hosts)."""
    le = words.view(torch.int32).numpy().astype("<i4", copy=False)
    return memoryview(le.data).cast("B")


def _hash_masked(h: Any, data: memoryview, first: int, marked: list[int], keep: int) -> None:
    """Feed `data` (float32 words from flat index `first`) to `h`, each marked word ANDed
    with `keep`; the unmarked runs between marked words are hashed in place."""
    end = first + len(data) // 4
    lo, hi = bisect.bisect_left(marked, first), bisect.bisect_left(marked, end)
    pos = 0  # next byte of `data` not yet hashed
    for index in marked[lo:hi]:
        at = 4 * (index - first)
        h.update(data[pos:at])
        word = int.from_bytes(data[at:at + 4], "little") & keep
        h.update(word.to_bytes(4, "little"))
        pos = at + 4
    h.update(data[pos:])
