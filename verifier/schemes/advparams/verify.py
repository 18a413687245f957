"""The `advparams` test: exact float32 matches with the encrypted and the original values."""
from __future__ import annotations

import torch

from verifier.result import NULL_CONSERVATIVE, TestResult
from verifier.schemes.advparams.key import Key
from verifier.schemes.advparams.params import CLAIM, NAME
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect


def _generic(values: torch.Tensor, generic_bits: int) -> torch.Tensor:
    """Which float32 values are non-zero normals with >= generic_bits significant bits."""
    bits = values.view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    mantissa = (bits & 0x7FFFFF) | 0x800000  # with the implicit leading 1
    trailing = (mantissa & -mantissa).to(torch.float64).log2().round().to(torch.int64)
    return (exponent > 0) & (exponent < 255) & (24 - trailing >= generic_bits)


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Count exact float32 matches with the encrypted and with the original values.

    Rules:
    - the p-value is P[Bin(M, 2^-L) >= enc matches], M = the key's keyed candidates, L =
      dither_bits: conservative and proven for any key that `Key.from_bytes` accepts, even one
      written after looking at the suspect (package docstring);
    - original-value matches at generic positions G are reported in the details with the bound
      they would have under the package docstring's assumption (log10_p_original_if_assumed),
      never used for the decision: an assumption is not a proof, and a key's originals are
      whatever its writer put there;
    - a tensor the suspect lacks or holds with another shape matches nothing.

    Returns:
        TestResult (statistic = encrypted-value matches, n = candidates) with details
        matches_encrypted, matches_original, positions, generic_positions, log10_p_encrypted,
        log10_p_original_if_assumed, copy ("encrypted" | "decrypted" | "mixed" | "none"),
        assumption_not_used.
    """
    if not suspect.has_weights:
        return TestResult.not_applicable(NAME, "advparams reads weights; this suspect offers "
                                               "only black-box access")
    weights = suspect.weights
    if not any(n in weights for n, _ in key.tensors):
        return TestResult.not_applicable(
            NAME, f"the suspect has none of the {len(key.tensors)} tensors this key covers "
                  f"(e.g. `{key.tensors[0][0]}`): its weights are named differently")
    held = torch.full((key.positions,), float("nan"), dtype=torch.float32)
    present = torch.zeros(key.positions, dtype=torch.bool)
    for t, (name, shape) in enumerate(key.tensors):
        w = weights.get(name)
        sel = key.which == t
        if w is None or tuple(w.shape) != shape or not w.is_floating_point() or not sel.any():
            continue
        held[sel] = w.detach().to(torch.float32).contiguous().view(-1)[key.index[sel]]
        present |= sel
    bits = held.view(torch.int32)
    m_enc = present & (bits == key.enc.view(torch.int32))
    generic = _generic(key.orig, key.params.generic_bits)
    m_orig = present & generic & (bits == key.orig.view(torch.int32))
    k_enc, k_orig, p, g = int(m_enc.sum()), int(m_orig.sum()), key.positions, int(generic.sum())
    lp_enc = log10_binom_sf(k_enc, key.candidates, 2.0 ** -key.params.dither_bits)
    lp_orig = log10_binom_sf(k_orig, g, 2.0 ** -key.params.orig_bound_log2)
    copy_kind = ("mixed" if k_enc and k_orig else "encrypted" if k_enc else
                 "decrypted" if k_orig else "none")
    return TestResult.from_log10_p(
        NAME, statistic=k_enc, n=key.candidates, log10_p=lp_enc, null=NULL_CONSERVATIVE,
        details={"matches_encrypted": k_enc, "matches_original": k_orig, "positions": p,
                 "generic_positions": g, "log10_p_encrypted": lp_enc,
                 "log10_p_original_if_assumed": lp_orig, "copy": copy_kind,
                 "missing_positions": int((~present).sum()),
                 "assumption_not_used": (f"an independent model reproduces a generic trained float32 "
                                f"weight with probability <= 2^-{key.params.orig_bound_log2}; "
                                "a key's original values are not keyed, so this figure is "
                                "forgeable and never decides")},
        claim=CLAIM)
