"""`lsb`: a post-training signature in the least significant mantissa bits of float32 weights.

Exact copy and integrity only. The owner's Ed25519 signature over the model's identity (the
SHA-256 of its weights with the marked bits cleared) is written, with a repetition code, into
the `k` lowest mantissa bits of a few hundred float32 weights at positions chosen by a keyed
DRBG. Fine-tuning, pruning, fp16/bf16 or int8 conversion re-randomise or zero those bits in
every weight they touch (conversion touches all): the scheme says "this is a bit-exact copy of
the signed model" (valid signature, matching masked digest) or "this suspect kept some of the
owner's keyed bits" (small p-value), never "this model was not derived from mine".

Why the p-value is exact for ANY suspect: the bits written are codeword XOR pad, where the pad
is a keyed pseudo-random bit string. Under H0 the suspect is independent of the key, so each
expected bit is a fair coin independent of whatever the suspect holds at that position: an
all-zero low mantissa (bf16- or fp16-derived weights), a pruned zero, a constant. Then
P[bit matches] = 1/2 exactly and independently across bits, and the number of matching bits is
Bin(n, 1/2). Without the pad the null would be wrong: the owner's signature bits are fixed, and
a suspect whose low bits are all zero would match every zero bit of the payload.

Forgery (issue 9): every random element re-derives from the key's secret: the positions are
DRBG draws over the layout alone (never steered by weight values), the pad, filler and
signature are recomputed, and `Key.from_bytes` refuses a key whose stored positions or public
key differ (`keyfile.KeyMaterialError`). Only a valid owner signature over the suspect's own
masked digest attributes (`TestResult.may_attribute`); the p-value alone is integrity only.

Modules, each importing only the ones above it: `params` (constants, Params, LSBError),
`positions` (layout, keyed positions, masked digest), `key` (Key, re-derivation), `embed`
(generate_key, embed), `verify` (test).

Example:
    >>> from verifier import toy
    >>> from verifier.suspect import Suspect
    >>> model = toy.MLP()
    >>> key = generate_key(Params(), seed=7, model=model)
    >>> r = test(Suspect.from_module(embed(model, key)), key)
    >>> r.log10_p < -9 and r.details["masked_digest_match"]
    True
"""
from __future__ import annotations

from verifier.schemes.lsb.embed import embed, generate_key
from verifier.schemes.lsb.key import Key
from verifier.schemes.lsb.params import ACCESS, CLAIM, NAME, LSBError, Params
from verifier.schemes.lsb.verify import test

__all__ = ["ACCESS", "CLAIM", "NAME", "Key", "LSBError", "Params", "embed", "generate_key", "test"]
