"""Everything random in a `trigger_set` key, as outputs of the keyed DRBG over the seed.

secret = SHA-256("hallmark/trigger_set/seed/v1" ‖ seed as 16 signed big-endian bytes), then one
HMAC-SHA256 counter-mode stream per purpose (`verifier.schemes._keyed.drbg_u64`), so the streams
are independent of each other and identical on every machine (integer arithmetic only; the
floats below are exact: 24-bit integers scaled by 2^-24 in float32):

- `labels`:  the secret labels, uniform on [0, C) by rejection sampling (no modulo bias);
- `noise`:   keyed_noise triggers, uniform on the grid {lo + (hi - lo)·j/2^24} per value;
- `sources`: adversarial variant, the order in which held-out inputs are taken (Fisher–Yates);
- `starts`:  adversarial variant, PGD start points in [-1, 1) per value (scaled by eps).

`Key` re-derives `labels` (and `noise` for keyed_noise) and refuses a key whose stored values
differ; `sources` and `starts` feed the owner's model and cannot be checked without it.

Example:
    >>> labels(1, 5, 10).tolist() == labels(1, 5, 10).tolist()
    True
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from verifier.schemes._keyed import drbg_u64, secret_from_seed
from verifier.schemes.trigger_set.params import TriggerSetError

_DOMAIN = b"hallmark/trigger_set/seed/v1"
_TWO64 = 2**64


def labels(seed: int, n: int, classes: int) -> torch.Tensor:
    """(n,) int64 secret labels, each uniform on [0, classes), independent of everything else."""
    if classes < 2:
        raise TriggerSetError(f"classes must be >= 2, received {classes}")
    return torch.tensor(_uniform_ints(_stream(seed, b"labels"), n, classes), dtype=torch.int64)


def noise(seed: int, n: int, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    """(n, *shape) float32 keyed-noise triggers, uniform on a 2^24-level grid over [lo, hi)."""
    return lo + (hi - lo) * _unit(_stream(seed, b"noise"), (n, *shape))


def starts(seed: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(n, *shape) float32 PGD start offsets in [-1, 1) (the caller scales them by eps)."""
    return 2.0 * _unit(_stream(seed, b"starts"), (n, *shape)) - 1.0


def sources(seed: int, count: int) -> torch.Tensor:
    """(count,) int64 a keyed permutation of range(count): the order held-out inputs are used."""
    order = list(range(count))
    stream = _stream(seed, b"sources")
    for i in range(count - 1, 0, -1):  # Fisher–Yates, j uniform on [0, i]
        j = _uniform_ints(stream, 1, i + 1)[0]
        order[i], order[j] = order[j], order[i]
    return torch.tensor(order, dtype=torch.int64)


def _stream(seed: int, purpose: bytes) -> Iterator[int]:
    return drbg_u64(secret_from_seed(seed, _DOMAIN, TriggerSetError), purpose)


def _uniform_ints(stream: Iterator[int], n: int, m: int) -> list[int]:
    """n integers uniform on [0, m): reject the top 2^64 mod m values so every residue is equally likely."""
    limit = _TWO64 - _TWO64 % m
    out: list[int] = []
    while len(out) < n:
        v = next(stream)
        if v < limit:
            out.append(v % m)
    return out


def _unit(stream: Iterator[int], shape: tuple[int, ...]) -> torch.Tensor:
    """float32 values j / 2^24 (j uniform on [0, 2^24)), exact in float32."""
    count = 1
    for s in shape:
        count *= s
    ints = torch.tensor([next(stream) >> 40 for _ in range(count)], dtype=torch.int64)
    return (ints.to(torch.float32) * 2.0**-24).reshape(shape)
