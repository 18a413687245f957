"""Keyed randomness shared by the schemes that derive everything from a 32-byte secret.

Two primitives, each scheme keeping its own domain-separation string and error type, so keys
and outputs are byte-identical to the per-scheme copies these replace:

- `secret_from_seed`: SHA-256(domain ‖ seed) with an int seed as 16 signed big-endian bytes.
- `drbg_u64`: HMAC-SHA256(secret, label ‖ counter) in counter mode, as 64-bit integers.

Example:
    >>> s = secret_from_seed(1, b"hallmark/example/seed/v1", ValueError)
    >>> len(s), next(drbg_u64(s, b"a")) == next(drbg_u64(s, b"a"))
    (32, True)
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator


def secret_from_seed(seed: int | bytes, domain: bytes, error_type: type[Exception]) -> bytes:
    """A 32-byte secret from an int (reproducible tests) or bytes (pass 32 random bytes).

    Args:
        seed: an int (not a bool), encoded as 16 signed big-endian bytes, or raw bytes.
        domain: the scheme's domain-separation prefix, e.g. b"hallmark/lsb/seed/v1".
        error_type: the scheme's error class, raised for a seed of the wrong type.

    Returns:
        SHA-256(domain ‖ seed bytes), 32 bytes.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | bytes):
        raise error_type(f"seed must be an int or bytes, received {type(seed).__name__}")
    raw = seed if isinstance(seed, bytes) else seed.to_bytes(16, "big", signed=True)
    return hashlib.sha256(domain + raw).digest()


def drbg_u64(secret: bytes, label: bytes) -> Iterator[int]:
    """HMAC-SHA256 in counter mode, as an endless stream of keyed 64-bit integers.

    Args:
        secret: the key secret (HMAC key).
        label: what the stream is for (domain separation within one key).

    Returns:
        An endless iterator of ints in [0, 2**64), four per HMAC block, big-endian.
    """
    counter = 0
    while True:
        block = hmac.new(secret, label + struct.pack(">Q", counter), hashlib.sha256).digest()
        counter += 1
        for i in range(0, 32, 8):
            yield int.from_bytes(block[i:i + 8], "big")
