"""`trigger_set`: trigger inputs with secret seeded labels, marked into every layer. Black-box.

Two variants (`Params.variant`):

- "adversarial" (ROWBACK-style, Chattopadhyay & Chattopadhyay, ICMLA 2021): held-out inputs,
  chosen in a seeded order, pushed by untargeted PGD (keyed start points) against the owner's
  model. The triggers depend on that model, so they cannot be re-derived from the seed: the key
  stores them, `owner_chosen_inputs` is True and the registry screens the key against a
  reference panel (`verifier.screening`).
- "keyed_noise": the inputs are noise images drawn from the seed; the key does not store them
  (`Key.from_bytes` re-derives them), `owner_chosen_inputs` is False, and forging a key needs a
  seed search.

In both, the labels are drawn uniformly from the C classes by the keyed DRBG over the seed
(`derive.labels`), and every Key re-derives them (`keyfile.KeyMaterialError("labels", ...)` if
they differ). Embedding: layer by layer, then all layers, until the triggers carry their labels
(`embed`). Test: k = predictions equal to their label; p = P[Binomial(n, 1/C) >= k], exact
under H0 (for adversarial keys, given triggers chosen without regard to the labels: see
`verify`). Modules, each importing only those above it: params, derive, key, generate, embed,
verify.
"""
from __future__ import annotations

from verifier.schemes.trigger_set.embed import embed
from verifier.schemes.trigger_set.generate import generate_key
from verifier.schemes.trigger_set.key import Key
from verifier.schemes.trigger_set.params import (
    ADVERSARIAL,
    KEYED_NOISE,
    NAME,
    VARIANTS,
    Params,
    TriggerSetError,
)
from verifier.schemes.trigger_set.verify import (
    ASSUMPTION_ADVERSARIAL,
    ASSUMPTION_KEYED_NOISE,
    CLAIM,
    NULL_SCREENED,
    p_value,
    test,
)

ACCESS = "black-box"

__all__ = ["ACCESS", "ADVERSARIAL", "ASSUMPTION_ADVERSARIAL", "ASSUMPTION_KEYED_NOISE", "CLAIM",
           "KEYED_NOISE", "NAME", "NULL_SCREENED", "VARIANTS", "Key", "Params", "TriggerSetError",
           "embed", "generate_key", "p_value", "test"]
