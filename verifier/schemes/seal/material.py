"""`seal` key material: passports, projections and bits, all derived from the key seed.

Everything secret in a SEAL key is regenerated from its seed through SHAKE-256 streams, so the
derivation is portable across machines and versions. Nothing here knows about keys: every
function takes the seed, which lets `key`, `embed` and `verify` all build on it.

Example:
    >>> secret_bits(7, 4).abs().tolist()
    [1.0, 1.0, 1.0, 1.0]
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from verifier.keyfile import KeyFormatError

_SCALED_IDENTITY_TOL = 0.1  # ‖C − mean(diag C)·I‖_F ≤ this·‖C‖_F: a (scaled) identity
_MIN_SINGULAR_RATIO = 1e-3  # σ_min / σ_max below this: rank-deficient passport
_MAX_PASSPORT_COSINE = 0.9  # |cos(C, C_p)| above this: C_p is (nearly) a multiple of C


class PassportError(KeyFormatError):
    """A SEAL key whose passports prove nothing (trivial, or a rank too small to have any)."""


def _stream(seed: int, label: str, n_bytes: int) -> bytes:
    """n_bytes of SHAKE-256 output for (seed, label): portable across machines and versions."""
    return hashlib.shake_256(f"hallmark/seal/v1|{seed}|{label}".encode()).digest(n_bytes)


def _normals(seed: int, label: str, n: int) -> torch.Tensor:
    """n standard normals from the (seed, label) stream by Box-Muller, float32, (n,)."""
    pairs = (n + 1) // 2
    raw = np.frombuffer(_stream(seed, label, 8 * pairs), dtype="<u4").astype(np.float64)
    u1 = (raw[0::2] + 0.5) / 2.0 ** 32  # in (0, 1)
    u2 = (raw[1::2] + 0.5) / 2.0 ** 32
    rad = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([rad * np.cos(2 * np.pi * u2), rad * np.sin(2 * np.pi * u2)])[:n]
    return torch.from_numpy(z.astype(np.float32))


def secret_bits(seed: int, bits: int) -> torch.Tensor:
    """The key's T fair-coin bits as ±1, (T,) float32: one stream byte's low bit each."""
    raw = np.frombuffer(_stream(seed, "bits", bits), dtype=np.uint8)
    return torch.from_numpy((2.0 * (raw & 1) - 1.0).astype(np.float32))


def _rademacher(seed: int, label: str, n: int) -> torch.Tensor:
    """n independent ±1 signs from the (seed, label) stream, float32, (n,)."""
    raw = np.unpackbits(np.frombuffer(_stream(seed, label, (n + 7) // 8), dtype=np.uint8))[:n]
    return torch.from_numpy(2.0 * raw.astype(np.float32) - 1.0)


def projections(seed: int, target: str, bits: int, shape: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rank-one projections of one target: U (T, d) and V (T, k), independent ±1 signs.

    Bit j of this target projects ΔW on u_j·v_jᵀ. Signs rather than Gaussians: the same second
    moment (E[(uᵀ·M·v)²] = ‖M‖²_F), one stream bit per entry instead of 32, so regenerating
    them for MiniLM's 12 targets costs a millisecond instead of tens.
    """
    d, k = shape
    u = _rademacher(seed, f"u|{target}|{bits}|{d}x{k}", bits * d).reshape(bits, d)
    v = _rademacher(seed, f"v|{target}|{bits}|{d}x{k}", bits * k).reshape(bits, k)
    return u, v


def triviality(c: torch.Tensor, c_p: torch.Tensor) -> list[str]:
    """Why a passport pair would be trivial (empty when it is not).

    Rules: C and C_p are finite and non-zero, not (close to) a scaled identity (this includes
    the identity), not rank-deficient, and C_p is not (nearly) a multiple of C.
    """
    out = []
    for name, x in (("C", c.double()), ("C_p", c_p.double())):
        norm = float(x.norm())
        if not math.isfinite(norm) or norm == 0.0:
            out.append(f"{name} is zero or not finite")
            continue
        r = x.shape[0]
        off = x - x.diagonal().mean() * torch.eye(r, dtype=x.dtype)
        if r < 2 or float(off.norm()) <= _SCALED_IDENTITY_TOL * norm:
            out.append(f"{name} is (close to) a scaled identity")
        s = torch.linalg.svdvals(x)
        if float(s[-1]) < _MIN_SINGULAR_RATIO * float(s[0]):
            out.append(f"{name} is rank-deficient (σ_min/σ_max = {float(s[-1] / s[0]):.1e})")
    if not out:
        cos = float((c.double() * c_p.double()).sum() / (c.double().norm() * c_p.double().norm()))
        if abs(cos) > _MAX_PASSPORT_COSINE:
            out.append(f"C_p is (nearly) a multiple of C (cosine {cos:+.3f})")
    return out


def passports_from_seed(seed: int, target: str, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (C, C_p) of one target, each (r, r) with N(0, 1/r) entries, from the seed.

    Draws are repeated (attempt 0, 1, ...) until the pair is non-trivial, so every seed gives
    a usable key; the rule is deterministic, so anyone holding the seed can re-derive it.

    Raises:
        PassportError: r < 2 (a 1×1 passport is a scaled identity).
    """
    if r < 2:
        raise PassportError(f"r={r}: a 1×1 passport is a scaled identity and proves nothing; "
                            "use r ≥ 2")
    for attempt in range(1000):
        c = _normals(seed, f"C|{target}|{r}|{attempt}", r * r).reshape(r, r) / math.sqrt(r)
        c_p = _normals(seed, f"C_p|{target}|{r}|{attempt}", r * r).reshape(r, r) / math.sqrt(r)
        if not triviality(c, c_p):
            return c, c_p
    raise PassportError(f"no non-trivial passport for `{target}` at r={r}")  # pragma: no cover
