"""`advparams` keyed material: the candidate positions, their dither, the float32 stealth bounds.

Everything a forger could otherwise choose after looking at a model comes from here, as
outputs of the HMAC DRBG over the key's secret, under labels that bind the model's layout
(the eligible float32 tensors, names sorted):

- `draw_candidates`: `Params.candidates` distinct weights, uniform over the layout; the greedy
  search may move only these, and the test's p-value is taken over all of them;
- `draw_dither`: one keyed `dither_bits`-bit value per candidate, in draw order: the low
  mantissa bits of that candidate's encrypted value.

`Key.from_bytes` calls both again and refuses a key whose positions are not candidates or
whose encrypted values do not carry their candidate's dither.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import struct
from fractions import Fraction

import torch
from torch import nn

from verifier.schemes._keyed import drbg_u64, secret_from_seed
from verifier.schemes.advparams.params import AdvParamsError

Layout = tuple[tuple[str, tuple[int, ...]], ...]  # eligible float32 tensors (name, shape), by name
Position = tuple[int, int]  # (index into the layout, flat row-major index in that tensor)


def secret_from(seed: int | bytes) -> bytes:
    """A 32-byte key secret from an int (reproducible tests) or bytes (pass 32 random bytes)."""
    return secret_from_seed(seed, b"hallmark/advparams/seed/v1", AdvParamsError)


def eligible(model: nn.Module, include_biases: bool) -> dict[str, nn.Parameter]:
    """The parameters the search may move: float32, more than one value, 2-D+ unless biases."""
    return {n: p for n, p in sorted(model.named_parameters())
            if p.dtype == torch.float32 and p.numel() > 1 and (p.dim() >= 2 or include_biases)}


def layout_of(tensors: dict[str, nn.Parameter]) -> Layout:
    """(name, shape) of each eligible tensor, sorted by name."""
    return tuple((n, tuple(p.shape)) for n, p in sorted(tensors.items()))


def _label(what: bytes, layout: Layout) -> bytes:
    canon = json.dumps([[n, list(s)] for n, s in layout], separators=(",", ":")).encode()
    return what + b"/" + hashlib.sha256(canon).digest()


def candidate_count(layout: Layout, wanted: int) -> int:
    """How many candidates a key over this layout has: min(wanted, eligible weights)."""
    return min(wanted, sum(math.prod(s) for _, s in layout))


def draw_candidates(secret: bytes, layout: Layout, wanted: int) -> list[Position]:
    """The keyed candidate positions, in draw order (all weights, in order, if there are few).

    Args:
        secret: the key secret.
        layout: the eligible tensors, sorted by name.
        wanted: `Params.candidates`.

    Returns:
        `candidate_count(layout, wanted)` distinct (layout index, flat index) pairs.
    """
    sizes = [math.prod(s) for _, s in layout]
    total = sum(sizes)
    if wanted >= total:
        return [(t, i) for t, n in enumerate(sizes) for i in range(n)]
    offsets = [0, *itertools.accumulate(sizes)][:-1]  # first flat index of each tensor
    stream = drbg_u64(secret, _label(b"candidates", layout))
    limit = (1 << 64) - (1 << 64) % total  # rejection keeps the draw uniform
    chosen: dict[Position, None] = {}
    while len(chosen) < wanted:
        v = next(stream)
        if v >= limit:
            continue
        flat = v % total
        t = bisect.bisect_right(offsets, flat) - 1
        chosen.setdefault((t, flat - offsets[t]), None)
    return list(chosen)


def draw_dither(secret: bytes, layout: Layout, count: int, bits: int) -> list[int]:
    """One keyed `bits`-bit value per candidate, in the candidates' draw order."""
    stream = drbg_u64(secret, _label(b"dither", layout))
    return [next(stream) & ((1 << bits) - 1) for _ in range(count)]


# --------------------------------------------------------------------------- float32, exactly

def f32_bits(value: float) -> int:
    """The float32 bit pattern of a value, as an unsigned int."""
    return struct.unpack("<I", struct.pack("<f", value))[0]


def f32_value(bits: int) -> float:
    """The float32 whose bit pattern is `bits` (an unsigned 32-bit int), as a Python float."""
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def _f32_next(value: float, up: bool) -> float:
    """The next float32 after a finite float32 `value`, upward or downward."""
    if value == 0.0:
        return f32_value(1) if up else -f32_value(1)
    b = f32_bits(value)
    toward_larger_magnitude = up == (value > 0)
    return f32_value(b + 1 if toward_larger_magnitude else b - 1)


def _f32_round(x: Fraction, up: bool) -> float:
    """The smallest float32 >= x (up) or the largest float32 <= x (down), exactly."""
    v = f32_value(f32_bits(float(x)))  # nearest-ish; corrected below
    if up:
        while Fraction(v) < x:
            v = _f32_next(v, True)
        while Fraction(_f32_next(v, False)) >= x:
            v = _f32_next(v, False)
    else:
        while Fraction(v) > x:
            v = _f32_next(v, False)
        while Fraction(_f32_next(v, True)) <= x:
            v = _f32_next(v, True)
    return v


def stealth_bounds(t: torch.Tensor, beta: float) -> tuple[float, float]:
    """The stealth bounds of a tensor, as float32 values: every encrypted value v satisfies

        min + beta * (max - min) <= v <= max - beta * (max - min)

    in exact arithmetic (min, max: the tensor's float32 extremes; beta: the binary value of the
    float). The bounds are rounded inward to float32, so the comparison does not depend on the
    machine's float path (BLAS, CPU features, threads): only on the stored float32 values.
    """
    vmin, vmax = Fraction(float(t.detach().min())), Fraction(float(t.detach().max()))
    b = Fraction(beta)
    return _f32_round(vmin + b * (vmax - vmin), up=True), _f32_round(vmax - b * (vmax - vmin),
                                                                      up=False)


def dithered(value: float, lo: float, hi: float, r: int, bits: int) -> float | None:
    """The float32 nearest `value` whose low `bits` mantissa bits are `r`, inside [lo, hi].

    The candidates are `value`'s own block of 2**bits patterns and its two neighbours; None
    when none of them is a finite value inside the bounds (the move is then dropped).
    """
    base = (f32_bits(value) & ~((1 << bits) - 1)) | r
    fits = []
    for b in (base, base - (1 << bits), base + (1 << bits)):
        if not 0 <= b <= 0xFFFFFFFF or (b >> 23) & 0xFF == 0xFF:
            continue  # outside the 32-bit patterns, or an infinity / NaN
        v = f32_value(b)
        if lo <= v <= hi and (b ^ f32_bits(value)) >> 31 == 0:  # same sign as the move
            fits.append((abs(v - value), v))
    return min(fits)[1] if fits else None
