"""`advparams`: AdvParams (Xue et al., arXiv 2105.13697): encrypt a model by moving a few weights.

Active protection, post-training, no retraining. A handful of weights are pushed, greedily by
loss gradient on a small labelled set, in the loss-increasing direction, each within its own
tensor's value range (stealth bounds [min + beta*range, max - beta*range]), until the loss has
grown past a multiple of the original and accuracy has collapsed. The key lists every moved
weight as (tensor, flat index, original float32, encrypted float32); decryption writes the
originals back, bit-exact. The registry can publish the encrypted model and hand the key to a
licensee inside a signed licence (`verifier.licence`).

As a test, the key is an exact-copy fingerprint (`test`): a suspect holding the encrypted
values (an encrypted copy) or the original values (a decrypted copy) at the key's positions.

The null, honestly:
- Encrypted copies: after the greedy search, the low `dither_bits` mantissa bits of every
  encrypted value are replaced with keyed random bits (a relative change below
  2**(dither_bits-23), far too small to matter for the attack). For any suspect independent of
  the key, each encrypted value is then matched with probability at most 1/(2**L - 1) (L =
  dither_bits; positions whose dithered value happened to equal the original are dropped,
  which excludes one of the 2**L patterns), independently across positions: the count of
  matches is stochastically below Bin(P, 1/(2**L - 1)). That bound is proven, not assumed.
- Decrypted copies: the original values are the owner's trained weights and must be restored
  bit-exact, so they cannot be dithered, and no bound holds for arbitrary suspects (a model
  full of zeros matches every zero). Only "generic" originals count (non-zero, normal, with at
  least `generic_bits` significant mantissa bits), under the stated ASSUMPTION that an
  independently trained model reproduces a given generic trained float32 weight at a given
  position with probability at most 2**-orig_bound_log2 (default 2**-8), independently
  across positions. Because that is an assumption, not a proof, its figure is only reported
  (`log10_p_original_if_assumed`) and never decides: a registry must not accuse on an
  assumption. Owners who need a proof for decrypted copies should sign the model with `lsb`
  (or mark it with `uchida`) before encrypting it.
- The reported p-value is p_enc alone (conservative, proven).

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

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from verifier import keyfile
from verifier.result import NULL_CONSERVATIVE, TestResult
from verifier.schemes._keyed import secret_from_seed
from verifier.schemes.advparams_search import AdvParamsError, Data, Weights, search
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

NAME = "advparams"
ACCESS = "white-box"
CLAIM = ("exact-copy fingerprint: a positive test shows the suspect holds, bit for bit, the "
         "owner's encrypted values at the key's secret positions (an encrypted copy; the bound is "
         "proven by the keyed dither). A decrypted copy is recognised and reported in the details "
         "(matches with the original values), but carries no p-value: nothing proves how rarely an "
         "independent model reproduces a trained weight, so attribute decrypted copies with the "
         "owner's other watermarks; "
         "fine-tuning or quantization, which change those weights, erase it (pruning only "
         "removes the ones it zeroes), and AdvParams itself protects access to the encrypted "
         "model, not ownership of a decrypted one")


@dataclass(frozen=True)
class Params:
    """Public parameters of an AdvParams encryption."""

    beta: float = 0.1  # stealth margin: values stay in [min + beta*range, max - beta*range]
    step: float = 0.1  # each greedy move is step * (the tensor's range), then clipped
    loss_multiple: float = 5.0  # stop only once the loss exceeds this multiple of the original
    target_drop: float = 0.9  # ... and accuracy on the set fell by this fraction (relative)
    max_positions: int = 400  # give up moving new weights after this many
    samples: int = 256  # labelled examples drawn from `data` to compute gradients on
    include_biases: bool = False  # also encrypt 1-D parameters (default: weights only)
    dither_bits: int = 12  # keyed low mantissa bits of each encrypted value (the proven bound)
    generic_bits: int = 12  # an original counts for the test if it has this many significant bits
    orig_bound_log2: int = 8  # assumed bound 2**-this on matching one generic original by chance

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.beta < 0.5, f"beta must lie in [0, 0.5), received {self.beta}"),
            (0.0 < self.step <= 1.0, f"step must lie in (0, 1], received {self.step}"),
            (self.loss_multiple >= 1.0, f"loss_multiple must be >= 1, received "
                                        f"{self.loss_multiple}"),
            (0.0 <= self.target_drop < 1.0, f"target_drop must lie in [0, 1), received "
                                            f"{self.target_drop}"),
            (self.max_positions >= 1, f"max_positions must be >= 1, received "
                                      f"{self.max_positions}"),
            (self.samples >= 1, f"samples must be >= 1, received {self.samples}"),
            (1 <= self.dither_bits <= 16, f"dither_bits must lie in [1, 16], received "
                                          f"{self.dither_bits}"),
            (1 <= self.generic_bits <= 24, f"generic_bits must lie in [1, 24], received "
                                           f"{self.generic_bits}"),
            (1 <= self.orig_bound_log2 <= 24, f"orig_bound_log2 must lie in [1, 24], received "
                                              f"{self.orig_bound_log2}"),
        ]
        for ok, message in checks:
            if not ok:
                raise AdvParamsError(f"Params: {message}")


# --------------------------------------------------------------------------- keyed randomness

def _secret_from_seed(seed: int | bytes) -> bytes:
    """A 32-byte key secret from an int (reproducible tests) or bytes (pass 32 random bytes)."""
    return secret_from_seed(seed, b"hallmark/advparams/seed/v1", AdvParamsError)


# --------------------------------------------------------------------------- the key

@dataclass(frozen=True)
class Key:
    """An AdvParams key: which weights were moved, from what, to what.

    It is the decryption material: whoever holds it can restore the original model.
    """

    params: Params  # public parameters of the encryption
    tensors: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape) of each tensor touched
    which: torch.Tensor  # (P,) int64 index into `tensors`
    index: torch.Tensor  # (P,) int64 flat (row-major) index within that tensor
    orig: torch.Tensor  # (P,) float32 original values (restored bit-exact by decrypt)
    enc: torch.Tensor  # (P,) float32 encrypted values (low dither_bits keyed)
    stats: dict[str, Any]  # loss / accuracy before and after on the set, parameter count, data digest

    @property
    def positions(self) -> int:
        """Number of encrypted weights."""
        return int(self.index.numel())

    def fraction_touched(self) -> float:
        """Encrypted weights as a fraction of all the model's parameters."""
        return self.positions / max(1, int(self.stats["total_parameters"]))

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see `verifier.keyfile`)."""
        return keyfile.dump(NAME, {"which": self.which, "index": self.index, "orig": self.orig,
                                   "enc": self.enc},
                            {"params": asdict(self.params), "stats": self.stats,
                             "tensors": [[n, list(s)] for n, s in self.tensors]})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes`; raises keyfile.KeyFormatError on a bad blob."""
        _, t, meta = keyfile.load(blob, NAME)
        try:
            key = cls(Params(**meta["params"]),
                      tuple((str(n), tuple(int(d) for d in s)) for n, s in meta["tensors"]),
                      t["which"], t["index"], t["orig"], t["enc"], dict(meta["stats"]))
        except (KeyError, TypeError, ValueError, AdvParamsError) as e:
            raise keyfile.KeyFormatError(
                f"malformed advparams key: {type(e).__name__}: {e}") from None
        p = key.positions
        ok = (all(x.shape == (p,) for x in (key.which, key.index, key.orig, key.enc))
              and key.which.dtype == key.index.dtype == torch.int64
              and key.orig.dtype == key.enc.dtype == torch.float32
              and bool(((key.which >= 0) & (key.which < len(key.tensors))).all()))
        if not ok:
            raise keyfile.KeyFormatError("malformed advparams key: `which`, `index`, `orig`, `enc` "
                                         "must be 1-D of equal length, int64/float32, in range")
        for w, i in zip(key.which.tolist(), key.index.tolist(), strict=True):
            if not 0 <= i < math.prod(key.tensors[w][1]):
                raise keyfile.KeyFormatError(
                    f"malformed advparams key: index {i} outside tensor `{key.tensors[w][0]}`")
        return key

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: the dither derives from the secret."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match: the strongest evidence this key can give."""
        return self.positions * math.log10(1.0 / ((1 << self.params.dither_bits) - 1))

    def public_params(self) -> dict[str, Any]:
        """What may be published: parameters and counts; no positions, no values."""
        return {**asdict(self.params), "positions": self.positions,
                "fraction_touched": self.fraction_touched(),
                "total_parameters": self.stats["total_parameters"]}

    def entries(self) -> list[tuple[str, int, float, float]]:
        """The key as a list of (tensor name, flat index, original, encrypted)."""
        return [(self.tensors[w][0], i, o, e) for w, i, o, e in
                zip(self.which.tolist(), self.index.tolist(), self.orig.tolist(),
                    self.enc.tolist(), strict=True)]


def encrypt(model: nn.Module, params: Params, seed: int | bytes, data: Data
            ) -> tuple[nn.Module, Key]:
    """Encrypt a copy of a trained model; return it with its key (the decryption material).

    Args:
        model: a trained float32 classifier (left untouched).
        params: the encryption parameters.
        seed: an int (reproducible) or bytes: picks the labelled subset and the keyed dither.
        data: a labelled set (x, y), e.g. held-out data; `params.samples` examples are used.

    Returns:
        (encrypted copy, Key). `decrypt(encrypted, key)` restores the model bit-exact.

    Raises:
        AdvParamsError: bad data, or no float32 weights.

    Example:
        >>> from verifier import toy
        >>> s = toy.digits()
        >>> enc, key = encrypt(toy.train_digits(toy.MLP(), s, 10), Params(), 0, (s.x_held, s.y_held))
        >>> key.positions < 200
        True
    """
    if not isinstance(model, nn.Module):
        raise AdvParamsError(f"encrypt expects an nn.Module, received {type(model).__name__}")
    secret = _secret_from_seed(seed)
    enc_model, moves = search(model, params, secret, data)
    key = Key(params, moves.tensors,
              torch.tensor(moves.which, dtype=torch.int64),
              torch.tensor(moves.index, dtype=torch.int64),
              torch.tensor(moves.orig, dtype=torch.float32),
              torch.tensor(moves.enc, dtype=torch.float32), moves.stats)
    return enc_model, key


def generate_key(params: Params, seed: int | bytes, model: nn.Module | None = None,
                 data: Data | None = None) -> Key:
    """Compute the AdvParams key of a model (positions depend on the model and the data).

    Same as `encrypt(model, params, seed, data)[1]`; `embed(model, key)` then applies it.

    Raises:
        AdvParamsError: model or data missing, or unusable.
    """
    if model is None or data is None:
        raise AdvParamsError("advparams.generate_key needs the trained model and a labelled set: "
                             "pass model=... and data=(x, y) (positions depend on both)")
    return encrypt(model, params, seed, data)[1]


# --------------------------------------------------------------------------- apply / restore

def _weights_of(model: nn.Module | Weights) -> dict[str, torch.Tensor]:
    if isinstance(model, nn.Module):
        return {k: v.detach() for k, v in model.state_dict().items()}
    if isinstance(model, Mapping):
        return dict(model)
    raise AdvParamsError(f"expected an nn.Module or a mapping of named tensors, received "
                         f"{type(model).__name__}")


def _swap(weights: Weights, key: Key, expect: torch.Tensor, write: torch.Tensor,
          what: str) -> dict[str, torch.Tensor]:
    """Copies of `weights` with `write` at the key positions, after checking they hold `expect`."""
    out = dict(weights)
    for t, (name, shape) in enumerate(key.tensors):
        w = weights.get(name)
        if w is None or tuple(w.shape) != shape or w.dtype != torch.float32:
            raise AdvParamsError(
                f"tensor `{name}` is missing or not float32 of shape {shape} (found "
                f"{None if w is None else (w.dtype, tuple(w.shape))}); this is not the model "
                f"the key was made for")
        sel = key.which == t
        idx = key.index[sel]
        flat = w.detach().contiguous().view(-1)
        if not torch.equal(flat[idx].view(torch.int32), expect[sel].view(torch.int32)):
            bad = int((flat[idx].view(torch.int32) != expect[sel].view(torch.int32)).sum())
            raise AdvParamsError(
                f"{bad} of the key's positions in `{name}` do not hold the {what} values; this "
                f"is not the model the key was made for (or it was modified since)")
        new = flat.clone()
        new[idx] = write[sel]
        out[name] = new.view(shape)
    return out


def _apply(model: nn.Module | Weights, weights: dict[str, torch.Tensor]) -> Any:
    if not isinstance(model, nn.Module):
        return weights
    out = copy.deepcopy(model)
    out.load_state_dict(weights)
    return out


@torch.no_grad()
def embed(model: nn.Module | Weights, key: Key, data: Any = None, **options: Any) -> Any:
    """Encrypt a copy of the model with an existing key (writes the encrypted values).

    Returns:
        An encrypted copy of the same kind (nn.Module, or dict of named tensors).

    Raises:
        AdvParamsError: the model does not hold the key's original values.
    """
    return _apply(model, _swap(_weights_of(model), key, key.orig, key.enc, "original"))


@torch.no_grad()
def decrypt(model: nn.Module | Weights, key: Key) -> Any:
    """Restore a copy of an encrypted model: the original values written back, bit-exact.

    Args:
        model: the encrypted model (nn.Module or named tensors, e.g. from safetensors).
        key: its key.

    Returns:
        A decrypted copy of the same kind; every tensor equals the original's bytes.

    Raises:
        AdvParamsError: the model does not hold the key's encrypted values.

    Example:
        >>> from verifier import toy
        >>> s = toy.digits(); m = toy.train_digits(toy.MLP(), s, 10)
        >>> enc, key = encrypt(m, Params(), 0, (s.x_held, s.y_held))
        >>> all(torch.equal(a, b) for a, b in zip(decrypt(enc, key).state_dict().values(),
        ...                                        m.state_dict().values()))
        True
    """
    return _apply(model, _swap(_weights_of(model), key, key.enc, key.orig, "encrypted"))


# --------------------------------------------------------------------------- test

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
    - the p-value is p_enc = P[Bin(P, 1/(2**L - 1)) >= enc matches]: conservative, proven by
      the keyed dither (the statistic is the number of encrypted-value matches);
    - original-value matches at generic positions G are reported in the details with the bound
      they would have under the module docstring's assumption (log10_p_original_if_assumed),
      never used for the decision: an assumption is not a proof;
    - a tensor the suspect lacks or holds with another shape matches nothing.

    Returns:
        TestResult (statistic = positions matching either value, n = positions) with details
        matches_encrypted, matches_original, generic_positions, log10_p_encrypted,
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
        if w is None or tuple(w.shape) != shape or not w.is_floating_point():
            continue
        sel = key.which == t
        held[sel] = w.detach().to(torch.float32).contiguous().view(-1)[key.index[sel]]
        present |= sel
    bits = held.view(torch.int32)
    m_enc = present & (bits == key.enc.view(torch.int32))
    generic = _generic(key.orig, key.params.generic_bits)
    m_orig = present & generic & (bits == key.orig.view(torch.int32))
    k_enc, k_orig, p, g = int(m_enc.sum()), int(m_orig.sum()), key.positions, int(generic.sum())
    lp_enc = log10_binom_sf(k_enc, p, 1.0 / ((1 << key.params.dither_bits) - 1))
    lp_orig = log10_binom_sf(k_orig, g, 2.0 ** -key.params.orig_bound_log2)
    copy_kind = ("mixed" if k_enc and k_orig else "encrypted" if k_enc else
                 "decrypted" if k_orig else "none")
    return TestResult.from_log10_p(
        NAME, statistic=k_enc, n=p, log10_p=lp_enc, null=NULL_CONSERVATIVE,
        details={"matches_encrypted": k_enc, "matches_original": k_orig,
                 "generic_positions": g, "log10_p_encrypted": lp_enc,
                 "log10_p_original_if_assumed": lp_orig, "copy": copy_kind,
                 "missing_positions": int((~present).sum()),
                 "assumption_not_used": (f"an independent model reproduces a generic trained float32 "
                                f"weight with probability <= 2^-{key.params.orig_bound_log2}")},
        claim=CLAIM)
