"""`output_signature` keyed randomness: the secret, uniform draws and the keyed lattice hash."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from verifier.schemes._keyed import secret_from_seed
from verifier.schemes.output_signature.params import OutputSignatureError


def secret_from(seed: int | bytes) -> bytes:
    """A 32-byte key secret from an int (reproducible tests) or bytes (pass 32 random bytes)."""
    return secret_from_seed(seed, b"hallmark/output_signature/seed/v1", OutputSignatureError)


def uniform_ints(stream: Iterator[int], count: int, low: int, high: int) -> list[int]:
    """`count` uniform integers in [low, high) by rejection (no modulo bias)."""
    span = high - low
    limit = (1 << 64) - (1 << 64) % span
    out: list[int] = []
    while len(out) < count:
        v = next(stream)
        if v < limit:
            out.append(low + v % span)
    return out


def lattice_dither(x: torch.Tensor, a: torch.Tensor, c: torch.Tensor, scale_bits: int,
                   hash_bits: int) -> torch.Tensor:
    """The keyed dither in {0, 1/2} for each (input, class): (N, C) float64."""
    modulus = float(1 << hash_bits)
    xq = torch.floor(x.reshape(x.shape[0], -1).to(torch.float64) * float(1 << scale_bits))
    q = xq - modulus * torch.floor(xq / modulus)  # (N, D) in [0, 2**b)
    h = q @ a.T + c  # (N, C) exact integers below 2**53
    h = h - modulus * torch.floor(h / modulus)
    return 0.5 * torch.floor(h / (modulus / 2))
