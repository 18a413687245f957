"""`output_signature`: a keyed, argmax-preserving signature in the logits of a served model.

Post-training and black-box. `embed(model, key)` returns a wrapper (`SignedOutput`) that
moves every logit below the runner-up down so that the log of its gap ratio to the runner-up's
gap lands on a keyed lattice: r' = delta * (ceil(r / delta - d) + d), r = log(g / g_2), with a
keyed dither d in {0, 1/2} per (input, class) (quantization index modulation; `lattice`). The
top and runner-up logits are never changed and every other logit only decreases, so the
predicted class never changes. Ratios of gaps are invariant under any positive affine map of
the logits, so the signature survives an API that serves log-probabilities, probabilities,
tempered or rescaled logits, and (counting only the pairs the precision resolves) fp16.

The dither is a keyed function of the input that the exported ONNX graph computes itself:

    q = floor(x * 2**s) mod 2**b                      (N, D) integers, the quantized input
    h = (q @ A.T + c) mod 2**b                        (N, C) A: (C, D), c: (C,) key integers
    d = 1/2 * [h >= 2**(b-1)]                         the top bit of h

all in float64, where every intermediate is an integer below 2**53 and hence exact in any
runtime, whatever its summation order (torch, onnxruntime). This is a Carter-Wegman keyed
universal hash (the construction of one-time MACs such as Poly1305/GHASH) rather than HMAC,
which has no exact ONNX form. It is the right PRF for this purpose because of what the test
needs: for query inputs whose parity vectors [q_t mod 2, 1] are linearly independent over
GF(2), the map (A, c) -> (h_t) is onto, so for a uniform key the hashes of the T queries are
EXACTLY independent and uniform on Z_{2**b}, and their top bits are independent fair coins.
`test` draws its queries to satisfy that condition, so the p-value is exact, not merely
computationally plausible. What it does not give is secrecy against an adversary who can
query the wrapped model adaptively (linear hashes are learnable) or who holds the ONNX file
(the key is in the graph): such an adversary can strip or forge the wrapper, as the CLAIM says.

Forgery (issue 9): a key is its parameters and a 32-byte secret; the hash key (A, c), the
lattice dither and the queries are all recomputed from the secret whenever they are used, and
`Key.from_bytes` refuses a blob that carries any other material (`keyfile.KeyMaterialError`),
so a registrant's only freedom is the seed (and the public parameters): a seed search, about
1/p trials.

Modules, each importing only the ones above it: `params` (constants, Params, the error),
`keyed` (secret, uniform draws, the keyed hash), `key` (Key, generate_key), `wrapper`
(SignedOutput, embed), `verify` (test).

Example:
    >>> from verifier import toy
    >>> from verifier.suspect import Suspect
    >>> key = generate_key(Params(), seed=3)
    >>> wrapped = embed(toy.MLP(), key)
    >>> test(Suspect.from_module(wrapped), key).log10_p < -9
    True
"""
from __future__ import annotations

from verifier.schemes.output_signature.key import Key, generate_key
from verifier.schemes.output_signature.params import (
                                                      ACCESS,
                                                      CLAIM,
                                                      NAME,
                                                      OutputSignatureError,
                                                      Params,
)
from verifier.schemes.output_signature.verify import test
from verifier.schemes.output_signature.wrapper import SignedOutput, embed

__all__ = ["ACCESS", "CLAIM", "NAME", "Key", "OutputSignatureError", "Params", "SignedOutput",
           "embed", "generate_key", "test"]
