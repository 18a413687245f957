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

import copy
import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
import torch
from torch import nn

from verifier import keyfile
from verifier.result import NULL_CONSERVATIVE, NULL_EXACT, TestResult
from verifier.schemes._keyed import drbg_u64, secret_from_seed
from verifier.schemes.lsb_positions import LSBError, _choose_positions, _layout, _masked_digest
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

NAME = "lsb"
ACCESS = "white-box"
CLAIM = ("exact copy and integrity only: signature_valid with masked_digest_match shows the "
         "suspect is a bit-exact copy of the signed model; a small p-value alone shows it kept "
         "the owner's keyed low bits in some weights, which survive only where a modification "
         "did not touch them (partial fine-tuning, pruning); fp16/bf16/int8 conversion or "
         "retraining erases the mark, so a negative test says nothing about whether the suspect "
         "was derived from the owner's model")

_SIGNATURE_BITS = 512  # an Ed25519 signature is 64 bytes
_DOMAIN = b"hallmark/lsb/v1"

Weights = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Params:
    """Public parameters of an `lsb` key."""

    k: int = 4  # low mantissa bits overwritten per chosen weight (relative change < 2**(k-23))
    repetitions: int = 3  # repetition-code factor: each signature bit is written this many times

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 16:
            raise LSBError(f"Params.k must lie in [1, 16], received {self.k}; k <= 8 keeps the "
                           "relative change of a weight below 3.1e-5")
        if self.repetitions < 1 or self.repetitions % 2 == 0:
            raise LSBError("Params.repetitions must be a positive odd number (majority vote), "
                           f"received {self.repetitions}")

    @property
    def positions(self) -> int:
        """Number of weights that carry bits."""
        return math.ceil(_SIGNATURE_BITS * self.repetitions / self.k)

    @property
    def n_bits(self) -> int:
        """Bits written and tested: `positions * k` (the codeword plus keyed filler bits)."""
        return self.positions * self.k


# --------------------------------------------------------------------------- keyed randomness

def _secret_from_seed(seed: int | bytes) -> bytes:
    """A 32-byte key secret from an int (reproducible tests) or bytes (pass 32 random bytes)."""
    return secret_from_seed(seed, b"hallmark/lsb/seed/v1", LSBError)


def _keyed_bits(secret: bytes, label: bytes, n: int) -> torch.Tensor:
    """`n` keyed pseudo-random bits: (n,) uint8 in {0, 1}, least significant bit first."""
    stream = drbg_u64(secret, label)
    words = [next(stream) for _ in range(math.ceil(n / 64))]
    return torch.tensor([(w >> j) & 1 for w in words for j in range(64)][:n], dtype=torch.uint8)


# --------------------------------------------------------------------------- the key

@dataclass(frozen=True)
class Key:
    """An `lsb` key: the secret, the layout of the signed model and its masked digest.

    Everything else (positions, pad, signing key, signature) is re-derived from the secret.
    """

    params: Params  # public parameters
    secret: bytes  # 32 bytes: seeds the position DRBG, the pad and the Ed25519 signing key
    layout: tuple[tuple[str, tuple[int, ...]], ...]  # float32 tensors (name, shape), by name
    positions: tuple[tuple[str, int], ...]  # (tensor name, flat index) of each marked weight
    masked_digest: bytes  # SHA-256 of the signed model's weights with the marked bits cleared

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The Ed25519 key that signs the model identity, derived from the secret."""
        return nacl.signing.SigningKey(hmac.new(self.secret, b"sign", hashlib.sha256).digest())

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 verify key of the signature (publishable)."""
        return bytes(self.signing_key.verify_key)

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see `verifier.keyfile`)."""
        index = torch.tensor([i for _, i in self.positions], dtype=torch.int64)
        names = [n for n, _ in self.layout]
        which = torch.tensor([names.index(n) for n, _ in self.positions], dtype=torch.int64)
        return keyfile.dump(NAME, {
            "secret": torch.tensor(list(self.secret), dtype=torch.uint8),
            "position_index": index, "position_tensor": which,
        }, {"params": asdict(self.params), "layout": [[n, list(s)] for n, s in self.layout],
            "masked_digest": self.masked_digest.hex(), "public_key": self.public_key.hex()})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes`; raises keyfile.KeyFormatError on a bad blob."""
        _, t, meta = keyfile.load(blob, NAME)
        try:
            params = Params(**meta["params"])
            layout = tuple((str(n), tuple(int(d) for d in s)) for n, s in meta["layout"])
            secret = bytes(t["secret"].tolist())
            names = [n for n, _ in layout]
            positions = tuple((names[int(w)], int(i)) for w, i in
                              zip(t["position_tensor"].tolist(), t["position_index"].tolist(),
                                  strict=True))
            key = cls(params, secret, layout, positions, bytes.fromhex(meta["masked_digest"]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise keyfile.KeyFormatError(f"malformed lsb key: {type(e).__name__}: {e}") from None
        if len(secret) != 32 or len(positions) != params.positions:
            raise keyfile.KeyFormatError(
                f"malformed lsb key: secret of {len(secret)} bytes (expected 32) and "
                f"{len(positions)} positions (expected {params.positions})")
        if key.public_key.hex() != meta.get("public_key"):
            raise keyfile.KeyFormatError("lsb key's public_key does not match its secret")
        return key

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: positions, pad and signature derive from the secret."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match: the strongest evidence this key can give."""
        return self.params.n_bits * math.log10(0.5)

    def public_params(self) -> dict[str, Any]:
        """What may be published: parameters, the signer's public key; no positions, no pad."""
        return {**asdict(self.params), "n_bits": self.params.n_bits,
                "positions": self.params.positions, "tensors": len(self.layout),
                "public_key": self.public_key.hex()}

    def expected_bits(self) -> torch.Tensor:
        """The raw bits written into the weights: codeword XOR keyed pad, (n_bits,) uint8."""
        return _codeword(self) ^ _keyed_bits(self.secret, b"pad", self.params.n_bits)


def _weights_of(model: nn.Module | Weights) -> dict[str, torch.Tensor]:
    if isinstance(model, nn.Module):
        return {k: v.detach() for k, v in model.state_dict().items()}
    if isinstance(model, Mapping):
        return {k: v.detach() for k, v in model.items()}
    raise LSBError(f"expected an nn.Module or a mapping of named tensors, received "
                   f"{type(model).__name__}")


def _signature(key: Key) -> bytes:
    """The owner's Ed25519 signature over the masked digest (deterministic, 64 bytes)."""
    return key.signing_key.sign(_DOMAIN + key.masked_digest).signature


def _codeword(key: Key) -> torch.Tensor:
    """Repetition code of the signature, filled to n_bits with keyed bits: (n_bits,) uint8."""
    sig = torch.tensor(list(_signature(key)), dtype=torch.uint8).unsqueeze(1)  # (64, 1)
    bits = ((sig >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1).flatten()  # (512,) MSB first
    # Copies are concatenated (not bit-by-bit repeated), so one weight's k adjacent bits
    # never hold two copies of the same signature bit.
    code = bits.repeat(key.params.repetitions)
    filler = _keyed_bits(key.secret, b"filler", key.params.n_bits - code.numel())
    return torch.cat([code, filler])


def generate_key(params: Params, seed: int | bytes, model: nn.Module | Weights | None = None) -> Key:
    """Derive an `lsb` key for one trained model.

    Positions depend on the model's float32 layout and the signature on its masked weights,
    so the model is required. The key is computed from the unmarked model, and embedding only
    changes the bits that the digest clears, so the digest also holds for the marked model.

    Args:
        params: public parameters (bits per weight, repetitions).
        seed: an int (reproducible) or bytes (in production: `secrets.token_bytes(32)`).
        model: the trained model (nn.Module or named tensors) that will be signed.

    Returns:
        The Key.

    Raises:
        LSBError: no model given, or too few float32 weights to hold the signature.

    Example:
        >>> key = generate_key(Params(k=4), seed=1, model=torch.nn.Linear(64, 64))
        >>> key.params.n_bits
        1536
    """
    if model is None:
        raise LSBError("lsb.generate_key needs the trained model: positions and the signed "
                       "digest depend on its weights; pass model=...")
    weights = _weights_of(model)
    layout = _layout(weights)
    if not layout:
        raise LSBError("the model has no float32 tensors; lsb signs float32 weights only "
                       "(convert the model with .float() before signing)")
    secret = _secret_from_seed(seed)
    positions = _choose_positions(secret, weights, layout, params.positions)
    return Key(params, secret, layout, positions,
               _masked_digest(weights, layout, positions, params.k))


def _write(weights: dict[str, torch.Tensor], key: Key) -> dict[str, torch.Tensor]:
    """Copies of the weights with the key's bits written (the input is left untouched)."""
    if _layout(weights) != key.layout:
        raise LSBError("this model's float32 tensors (names, shapes) differ from the ones the key "
                       "was generated for; generate a key from this model with generate_key")
    if _masked_digest(weights, key.layout, key.positions, key.params.k) != key.masked_digest:
        raise LSBError("this model's weights differ from the ones the key signed (masked digest "
                       "mismatch); generate a key from this exact model with generate_key")
    k = key.params.k
    bits = key.expected_bits().view(-1, k).to(torch.int32)  # (positions, k)
    values = (bits << torch.arange(k, dtype=torch.int32)).sum(dim=1)  # (positions,)
    out = {n: t.clone(memory_format=torch.contiguous_format) for n, t in weights.items()}
    for (name, index), v in zip(key.positions, values.tolist(), strict=True):
        ints = out[name].view(torch.int32).view(-1)
        ints[index] = (int(ints[index]) & ~((1 << k) - 1)) | v
    return out


@torch.no_grad()
def embed(model: nn.Module | Weights, key: Key, data: Any = None, **options: Any) -> Any:
    """Write the signature into a copy of the model (the input is left untouched).

    Args:
        model: the model the key was generated from (nn.Module or named tensors).
        key: from `generate_key(params, seed, model=model)`.
        data: unused (post-training scheme), accepted for the common contract.

    Returns:
        A signed copy of the same kind: an nn.Module, or a dict of named tensors.

    Raises:
        LSBError: the model is not the one the key was generated from.
    """
    weights = _weights_of(model)
    signed = _write(weights, key)
    if not isinstance(model, nn.Module):
        return signed
    out = copy.deepcopy(model)
    out.load_state_dict(signed)
    return out


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


def _decode_signature(raw: torch.Tensor, key: Key) -> bytes:
    """Majority vote over the repetition copies of the de-padded bits: the 64-byte signature."""
    code = raw ^ _keyed_bits(key.secret, b"pad", key.params.n_bits)
    copies = code[:_SIGNATURE_BITS * key.params.repetitions].view(key.params.repetitions, -1)
    bits = (copies.sum(dim=0) * 2 > key.params.repetitions).to(torch.uint8).view(-1, 8)
    return bytes((bits.to(torch.int32) << torch.arange(7, -1, -1)).sum(dim=1).tolist())


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Count the suspect's low bits that match the key's padded codeword; check its digest.

    Rules:
    - statistic = matching bits out of n = positions * k; p = P[Bin(n, 1/2) >= statistic],
      exact because every expected bit is XOR-ed with a keyed fair-coin pad independent of
      the suspect (see the module docstring);
    - a position in a tensor the suspect lacks (or holds with another shape) counts as a
      mismatch: the p-value is then conservative, and labelled so;
    - details: masked_digest_match (the suspect equals the signed model except for the marked
      bits), signature_valid (the majority-decoded payload is the owner's Ed25519 signature
      over the suspect's own masked digest), bit_errors, missing_positions.

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
    raw, missing = _read_bits(weights, key)
    expected = key.expected_bits()
    match = (raw == expected).view(-1, key.params.k)
    match[missing] = False  # absent positions are mismatches: a conservative count
    matches, n = int(match.sum()), key.params.n_bits
    digest = _masked_digest(weights, key.layout, key.positions, key.params.k)
    signature = _decode_signature(raw, key)
    try:
        nacl.signing.VerifyKey(key.public_key).verify(_DOMAIN + digest, signature)
        signature_valid = True
    except nacl.exceptions.BadSignatureError:
        signature_valid = False
    return TestResult.from_log10_p(
        NAME, statistic=matches, n=n, log10_p=log10_binom_sf(matches, n, 0.5),
        null=NULL_CONSERVATIVE if bool(missing.any()) else NULL_EXACT,
        details={"masked_digest_match": digest == key.masked_digest,
                 "signature_valid": signature_valid, "bit_errors": n - matches,
                 "missing_positions": int(missing.sum()), "k": key.params.k,
                 "public_key": key.public_key.hex()},
        claim=CLAIM)
