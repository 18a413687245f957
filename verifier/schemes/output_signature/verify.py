"""The `output_signature` test: query the keyed inputs, decode lattice bits, count matches."""
from __future__ import annotations

import torch

from verifier.result import NULL_EXACT, TestResult
from verifier.schemes.output_signature.key import Key
from verifier.schemes.output_signature.keyed import lattice_dither
from verifier.schemes.output_signature.lattice import decode
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
    readable, decoded, finite = decode(outputs, p.delta)
    # rows with non-finite outputs count as mismatches for every class (conservative); the top
    # class, the runner-up (the reference of the ratios), exact ties and pairs the outputs'
    # precision cannot resolve carry no bit and are skipped (choices made from the outputs alone)
    counted = readable | ~finite
    matched = readable & (decoded == expected)
    return counted, matched


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Query the key's inputs and count logit gaps that sit on the keyed lattice.

    Rules:
    - the key's `queries` inputs are sent through the suspect's predict function only;
    - the outputs may be logits, log-probabilities or probabilities, under any temperature or
      positive affine map, in float32 or fp16 (`lattice.decode`); for each query and each class
      below the runner-up, the log of its gap ratio to the runner-up's gap is decoded to a bit
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
