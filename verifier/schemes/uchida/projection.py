"""`uchida` projection: the secret matrix X = U ⊗ V over the host vector, from the key seed.

X is never built: it is the Kronecker product of two random matrices with orthogonal rows,
U (t1, N1) and V (t2, N2), over the host vector laid out as an N1 × N2 grid, so X·w is
U·grid·Vᵀ. Everything here is a function of (seed, T, M) alone: this module knows nothing
of keys, so `key`, `embed` and `verify` can all build on it.

Example:
    >>> u, v = factors(seed=1, bits=4, host_size=16)
    >>> tuple(u.shape), tuple(v.shape)
    ((2, 4), (2, 4))
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import nn


def subseed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose, derived from the key seed."""
    digest = hashlib.sha256(f"hallmark/uchida/{purpose}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def host_len(shape: tuple[int, ...]) -> int:
    """How many host-vector entries a layer of this shape gives (its fan-in)."""
    return math.prod(shape[1:])


def layout(m: int) -> tuple[int, int, int]:
    """(N1, N2, capacity): the host grid for M = m weights and the largest T it carries.

    The grid is N1 rows of N2 = ceil(sqrt M); when M does not fill it, its last row is
    zero-padded and only N1 - 1 rows of bits keep X at full rank.
    """
    n2 = math.isqrt(m - 1) + 1
    n1 = -(-m // n2)
    return n1, n2, m if n1 * n2 == m else (n1 - 1) * n2


def _grid(t: int, m: int) -> tuple[int, int]:
    """(t1, t2): the bit grid (t1 · t2 >= T), as square as the host grid allows."""
    n1, n2, _ = layout(m)
    t1max = n1 if n1 * n2 == m else n1 - 1
    t1 = min(t1max, math.isqrt(t - 1) + 1)
    return t1, -(-t // t1)


def _orthogonal_rows(t: int, n: int, g: torch.Generator) -> torch.Tensor:
    """(t, n) float64 with orthogonal rows of norm sqrt(n): a Gaussian matrix, orthonormalised."""
    q, r = torch.linalg.qr(torch.randn(n, t, generator=g, dtype=torch.float64))  # (n, t)
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1.0  # unique QR: positive diag(R), so every LAPACK gives the same X
    return (q * sign).T * math.sqrt(n)


def factors(seed: int, bits: int, host_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """U (t1, N1) and V (t2, N2) in float64: X = (U ⊗ V) restricted to the host's M columns."""
    n1, n2, _ = layout(host_size)
    t1, t2 = _grid(bits, host_size)
    g = torch.Generator().manual_seed(subseed(seed, "projection"))
    return _orthogonal_rows(t1, n1, g), _orthogonal_rows(t2, n2, g)


def apply(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, bits: int) -> torch.Tensor:
    """(X·w)_j for the first T = `bits` cells of the t1 × t2 bit grid, (T,)."""
    n1, n2 = u.shape[1], v.shape[1]
    if w.numel() == n1 * n2:
        grid = w.reshape(n1, n2)  # (N1, N2), no copy
    else:
        grid = nn.functional.pad(w, (0, n1 * n2 - w.numel())).view(n1, n2)  # zero-padded
    return (u @ (grid @ v.T)).reshape(-1)[:bits]  # (t1, t2) -> (T,)
