"""`advparams`: AdvParams (Xue et al., arXiv 2105.13697): encrypt a model by moving a few weights.

Active protection, post-training, no retraining. A handful of weights are pushed, greedily by
loss gradient on a small labelled set, in the loss-increasing direction, each within its own
tensor's value range (stealth bounds [min + beta*range, max - beta*range], enforced exactly on
the stored float32 values), until the loss has grown past a multiple of the original and
accuracy has collapsed. The key lists every moved weight as (tensor, flat index, original
float32, encrypted float32); decryption writes the originals back, bit-exact. The registry can
publish the encrypted model and hand the key to a licensee inside a signed licence
(`verifier.licence`).

As a test, the key is an exact-copy fingerprint (`test`): a suspect holding the encrypted
values (an encrypted copy) or the original values (a decrypted copy) at the key's positions.

The null, honestly:
- Encrypted copies. The seed draws M keyed *candidate* weights (`Params.candidates`, or every
  eligible weight when there are fewer) and one keyed L-bit value r_c per candidate
  (L = dither_bits). The greedy search may move only candidates, and the low L mantissa bits
  of every encrypted value are its candidate's r_c (a relative change below 2**(L-23), which
  does not matter to the attack). `Key.from_bytes` re-derives both and refuses any other key.
  So for ANY accepted key, even one written after looking at the suspect, a listed position
  can match only if it is a candidate whose suspect value has low bits r_c; for a suspect
  independent of the seed that happens with probability 2**-L per candidate, independently:
  the number of matches is stochastically below Bin(M, 2**-L), and the p-value is
  P[Bin(M, 2**-L) >= matches]. That bound is proven, not assumed; a forger's only way past it
  is a seed search, about 1/p trials.
- Decrypted copies: the original values are the owner's trained weights and must be restored
  bit-exact, so they cannot be dithered, and no bound holds for arbitrary suspects (a model
  full of zeros matches every zero), nor for arbitrary keys (a forger can copy any model's
  values into `orig`). Only "generic" originals count (non-zero, normal, with at least
  `generic_bits` significant mantissa bits), under the stated ASSUMPTION that an
  independently trained model reproduces a given generic trained float32 weight at a given
  position with probability at most 2**-orig_bound_log2 (default 2**-8), independently
  across positions. Because that is an assumption, not a proof, its figure is only reported
  (`log10_p_original_if_assumed`) and never decides: a registry must not accuse on an
  assumption. Owners who need a proof for decrypted copies should sign the model with `lsb`
  (or mark it with `uchida`) before encrypting it.
- The reported p-value is the encrypted-copy bound alone (conservative, proven).

Modules, each importing only the ones above it: `params` (constants, Params, AdvParamsError),
`material` (keyed candidates and dither, exact float32 bounds), `key` (Key, re-derivation),
`search` (the greedy search), `crypt` (encrypt, generate_key, embed, decrypt), `verify` (test).

Example:
    >>> from verifier import toy
    >>> from verifier.suspect import Suspect
    >>> split = toy.digits()
    >>> model = toy.train_digits(toy.MLP(), split, epochs=10)
    >>> enc, key = encrypt(model, Params(), seed=1, data=(split.x_held, split.y_held))
    >>> toy.accuracy(enc, split.x_test, split.y_test) < 0.3
    True
    >>> test(Suspect.from_module(enc), key).log10_p < -9
    True
"""
from __future__ import annotations

from verifier.schemes.advparams.crypt import decrypt, embed, encrypt, generate_key
from verifier.schemes.advparams.key import Key
from verifier.schemes.advparams.params import ACCESS, CLAIM, NAME, AdvParamsError, Params
from verifier.schemes.advparams.verify import test

__all__ = ["ACCESS", "CLAIM", "NAME", "AdvParamsError", "Key", "Params", "decrypt", "embed",
           "encrypt", "generate_key", "test"]
