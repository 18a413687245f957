"""The `output_signature` test: query the keyed inputs, decode lattice bits, count matches."""
from __future__ import annotations

import torch

from verifier.result import NULL_EXACT, TestResult
from verifier.schemes.output_signature.key import Key
from verifier.schemes.output_signature.keyed import lattice_dither
from verifier.schemes.output_signature.params import CLAIM, NAME
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect


def _bits_and_matches(outputs: torch.Tensor, key: Key, queries: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (query, class): whether it counts (non-top) and whether its lattice bit matches.

    Returns ((N, C) bool counted, (N, C) bool matched).
    """
    p = key.params
    a, c = key.hash_key()
    expected = lattice_dither(queries, a, c, p.scale_bits, p.hash_bits) * 2  # (N, C) bits in {0, 1}
    y = outputs.to(torch.float64)
    finite = torch.isfinite(y).all(dim=1, keepdim=True)  # (N, 1)
    y = torch.where(finite, y, torch.zeros_like(y))
    gap = y.max(dim=1, keepdim=True).values - y  # (N, C)
    frac = gap / p.delta - torch.floor(gap / p.delta)  # position within a lattice cell
    decoded = ((frac >= 0.25) & (frac < 0.75)).to(torch.float64)
    # non-finite outputs count as mismatches (conservative); the top class and exact ties
    # carry no bit in the wrapper and are skipped (a choice made from the outputs alone)
    counted = (gap > 0) | ~finite
    matched = counted & finite & (decoded == expected)
    return counted, matched


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Query the key's inputs and count logit gaps that sit on the keyed lattice.

    Rules:
    - the key's `queries` inputs are sent through the suspect's predict function only;
    - for each query and each non-top class, the gap to the top logit is decoded to a bit
      (is it nearer the half-step or the whole-step lattice?) and compared with the keyed bit;
    - statistic = matches out of n counted (query, class) pairs; p = P[Bin(n, 1/2) >= matches],
      exact: the keyed bits are independent fair coins given the queries (their parity vectors
      are GF(2)-independent, module docstring) and independent of any suspect not holding the key;
    - a suspect returning another number of classes is not applicable.

    Returns:
        TestResult with details: agreement, queries_for_1e-6 (the smallest prefix of the
        queries already giving p < 1e-6, or None), classes_counted.
    """
    if not suspect.has_predict:
        return TestResult.not_applicable(NAME, "output_signature queries a predict function; "
                                               "this suspect offers only weights")
    queries = key.queries()
    outputs = suspect.predict(queries)
    if outputs.dim() != 2 or outputs.shape != (len(queries), key.params.classes):
        return TestResult.not_applicable(
            NAME, f"the suspect returned outputs of shape {tuple(outputs.shape)} for "
                  f"{len(queries)} queries; the key expects ({len(queries)}, "
                  f"{key.params.classes}) logits")
    counted, matched = _bits_and_matches(outputs, key, queries)
    n, k = int(counted.sum()), int(matched.sum())
    n_cum = counted.sum(dim=1).cumsum(0).tolist()
    k_cum = matched.sum(dim=1).cumsum(0).tolist()
    needed = next((t + 1 for t in range(len(queries))
                   if log10_binom_sf(int(k_cum[t]), int(n_cum[t]), 0.5) < -6), None)
    return TestResult.from_log10_p(
        NAME, statistic=k, n=n, log10_p=log10_binom_sf(k, n, 0.5), null=NULL_EXACT,
        details={"agreement": k / n if n else 0.0, "queries_for_1e-6": needed,
                 "classes_counted": n, "delta": key.params.delta},
        queries=len(queries), claim=CLAIM)
