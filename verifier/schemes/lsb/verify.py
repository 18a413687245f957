"""The `lsb` test: read the suspect's low bits at the key's positions, count, check the signature."""
from __future__ import annotations

from collections.abc import Mapping

import nacl.exceptions
import nacl.signing
import torch

from verifier.result import NULL_CONSERVATIVE, NULL_EXACT, TestResult
from verifier.schemes.lsb.key import DOMAIN, Key
from verifier.schemes.lsb.params import CLAIM, NAME
from verifier.schemes.lsb.positions import masked_digest
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

SIGNED = "owner signature valid over the suspect's masked digest"
INTEGRITY_ONLY = ("integrity only: no valid owner signature over the suspect's masked digest, "
                  "so this p-value never names an owner")


def _read_bits(weights: Mapping[str, torch.Tensor], key: Key) -> tuple[torch.Tensor, torch.Tensor]:
    """The suspect's k low bits at each position, and a mask of the positions it lacks.

    Returns ((n_bits,) uint8 bits, (positions,) bool missing). Non-float32 tensors (fp16, bf16,
    float64) are read after conversion to float32, the form in which they would be served.
    """
    k = key.params.k
    shapes = dict(key.layout)
    values, missing = [], []
    cache: dict[str, torch.Tensor | None] = {}
    for name, index in key.positions:
        if name not in cache:
            t = weights.get(name)
            ok = t is not None and t.is_floating_point() and tuple(t.shape) == shapes[name]
            cache[name] = (t.detach().to(torch.float32).contiguous().view(torch.int32).flatten()
                           if t is not None and ok else None)
        ints = cache[name]
        missing.append(ints is None)
        values.append(0 if ints is None else int(ints[index]) & ((1 << k) - 1))
    v = torch.tensor(values, dtype=torch.int32).unsqueeze(1)  # (positions, 1)
    bits = ((v >> torch.arange(k, dtype=torch.int32)) & 1).to(torch.uint8).flatten()
    return bits, torch.tensor(missing, dtype=torch.bool)


def _signature_valid(key: Key, digest: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(key.public_key).verify(DOMAIN + digest, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Count the suspect's low bits that match the key's padded codeword; check its signature.

    Rules:
    - statistic = matching bits out of n = positions * k; p = P[Bin(n, 1/2) >= statistic],
      exact because every expected bit is XOR-ed with a keyed fair-coin pad independent of
      the suspect (see the package docstring);
    - a position in a tensor the suspect lacks (or holds with another shape) counts as a
      mismatch: the p-value is then conservative, and labelled so;
    - the result may attribute (`may_attribute`) only when the majority-decoded payload is the
      owner's Ed25519 signature over the suspect's own masked digest (`signature_valid`);
      otherwise it is integrity-only evidence and says so in `details["evidence"]`;
    - details: masked_digest_match (the suspect equals the signed model except for the marked
      bits), signature_valid, evidence, bit_errors, missing_positions.

    Returns:
        TestResult; not applicable when the suspect has no weights or none of the key's tensors.
    """
    if not suspect.has_weights:
        return TestResult.not_applicable(NAME, "lsb reads weights; this suspect offers only "
                                               "black-box access")
    weights = suspect.weights
    if not any(n in weights for n, _ in key.layout):
        return TestResult.not_applicable(
            NAME, f"the suspect has none of the {len(key.layout)} tensors this key marks "
                  f"(e.g. `{key.layout[0][0]}`): its weights are named differently")
    # the digest first: it reads every tensor, overlapping each first read with hashing
    digest = masked_digest(weights, key.layout, key.positions, key.params.k)
    raw, missing = _read_bits(weights, key)
    match = (raw == key.expected_bits()).view(-1, key.params.k)
    match[missing] = False  # absent positions are mismatches: a conservative count
    matches, n = int(match.sum()), key.params.n_bits
    signed = _signature_valid(key, digest, key.decode_signature(raw))
    return TestResult.from_log10_p(
        NAME, statistic=matches, n=n, log10_p=log10_binom_sf(matches, n, 0.5),
        null=NULL_CONSERVATIVE if bool(missing.any()) else NULL_EXACT,
        details={"masked_digest_match": digest == key.masked_digest,
                 "signature_valid": signed, "evidence": SIGNED if signed else INTEGRITY_ONLY,
                 "bit_errors": n - matches, "missing_positions": int(missing.sum()),
                 "k": key.params.k, "public_key": key.public_key.hex()},
        claim=CLAIM, may_attribute=signed)
