"""`output_signature`: a keyed, argmax-preserving signature in the logits of a served model.

Post-training and black-box. `embed(model, key)` returns a wrapper (`SignedOutput`) that
moves every non-top logit down by less than `delta` so that its gap to the top logit lands on
a keyed lattice: gap' = delta * (ceil(gap / delta - d) + d), with a keyed dither d in {0, 1/2}
per (input, class) (quantization index modulation). The top logit is never changed and every
other logit only decreases, so the predicted class never changes. Gaps are shift-invariant,
so the signature survives an API that returns log-probabilities instead of logits.

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

Example:
    >>> from verifier import toy
    >>> from verifier.suspect import Suspect
    >>> key = generate_key(Params(), seed=3)
    >>> wrapped = embed(toy.MLP(), key)
    >>> test(Suspect.from_module(wrapped), key).log10_p < -9
    True
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from verifier import keyfile
from verifier.result import NULL_EXACT, TestResult
from verifier.schemes._keyed import drbg_u64, secret_from_seed
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

NAME = "output_signature"
ACCESS = "black-box"
CLAIM = ("outputs came from a wrapped copy: a positive test shows the suspect's logits carry "
         "the owner's keyed output signature, i.e. it serves the owner's SignedOutput wrapper "
         "(whatever model sits inside it); it proves nothing about weights stolen and re-served "
         "without the wrapper, and rounding or re-normalising the outputs removes it")


class OutputSignatureError(ValueError):
    """Parameters, models or keys the scheme cannot use (the message says what and the fix)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of an `output_signature` key."""

    input_shape: tuple[int, ...] = (64,)  # shape of one input, without the batch dimension
    classes: int = 10  # number of logits the model returns
    delta: float = 1e-3  # lattice step on logit gaps: every logit moves by less than this
    scale_bits: int = 8  # inputs are quantized as floor(x * 2**scale_bits) before hashing
    hash_bits: int = 16  # the keyed hash works modulo 2**hash_bits
    queries: int = 48  # inputs the test sends; at most prod(input_shape) + 1
    input_low: float = 0.0  # the test's random inputs are drawn uniformly from
    input_high: float = 1.0  # [input_low, input_high) on the quantization grid

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        dim = math.prod(self.input_shape)
        checks = [
            (self.classes >= 2, f"classes must be >= 2, received {self.classes}"),
            (dim >= 1, f"input_shape must be non-empty, received {self.input_shape}"),
            (0.0 < self.delta < 1.0, f"delta must lie in (0, 1), received {self.delta}"),
            (0 <= self.scale_bits <= 24, f"scale_bits must lie in [0, 24], received "
                                         f"{self.scale_bits}"),
            (2 <= self.hash_bits <= 24, f"hash_bits must lie in [2, 24], received "
                                        f"{self.hash_bits}"),
            # q @ A.T sums D products below 2**(2b): exact in float64 only below 2**53
            (dim * 2 ** (2 * self.hash_bits) < 2 ** 53,
             f"inputs of {dim} values overflow exact float64 hashing at hash_bits="
             f"{self.hash_bits}; lower hash_bits"),
            (1 <= self.queries <= dim + 1,
             f"queries must lie in [1, {dim + 1}] for an input of {dim} values (the exact null "
             f"needs linearly independent queries), received {self.queries}"),
            (self.input_high - self.input_low >= 2 ** -self.scale_bits * 2,
             f"[input_low, input_high) = [{self.input_low}, {self.input_high}) holds fewer than "
             f"two quantization steps of 2**-{self.scale_bits}; widen it or raise scale_bits"),
        ]
        for ok, message in checks:
            if not ok:
                raise OutputSignatureError(f"Params: {message}")


# --------------------------------------------------------------------------- keyed randomness

def _secret_from_seed(seed: int | bytes) -> bytes:
    """A 32-byte key secret from an int (reproducible tests) or bytes (pass 32 random bytes)."""
    return secret_from_seed(seed, b"hallmark/output_signature/seed/v1", OutputSignatureError)


def _uniform_ints(stream: Iterator[int], count: int, low: int, high: int) -> list[int]:
    """`count` uniform integers in [low, high) by rejection (no modulo bias)."""
    span = high - low
    limit = (1 << 64) - (1 << 64) % span
    out: list[int] = []
    while len(out) < count:
        v = next(stream)
        if v < limit:
            out.append(low + v % span)
    return out


# --------------------------------------------------------------------------- the key

@dataclass(frozen=True)
class Key:
    """An `output_signature` key: the parameters and a 32-byte secret.

    The hash matrix, offsets and the test's queries are re-derived from the secret.
    """

    params: Params  # public parameters
    secret: bytes  # 32 bytes: seeds the keyed hash (A, c) and the query inputs

    def hash_key(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keyed hash: A (C, D) and c (C,), integers in [0, 2**hash_bits) as float64."""
        p = self.params
        dim, modulus = math.prod(p.input_shape), 1 << p.hash_bits
        values = _uniform_ints(drbg_u64(self.secret, b"hash"), p.classes * (dim + 1), 0, modulus)
        t = torch.tensor(values, dtype=torch.float64).view(p.classes, dim + 1)
        return t[:, :dim].contiguous(), t[:, dim].contiguous()

    def queries(self) -> torch.Tensor:
        """The test's inputs, (queries, *input_shape) float32, drawn from the key.

        Each input is (u + 1/2) / 2**scale_bits for a keyed integer vector u, so the wrapper
        quantizes it back to u exactly. Candidates are kept only if [u mod 2, 1] is linearly
        independent over GF(2) of those kept so far: the condition for exactly independent,
        uniform hashes (module docstring).
        """
        p = self.params
        dim, scale = math.prod(p.input_shape), 1 << p.scale_bits
        low, high = math.ceil(p.input_low * scale), math.floor(p.input_high * scale)
        stream = drbg_u64(self.secret, b"queries")
        basis: dict[int, int] = {}  # GF(2) row echelon form: leading bit -> row
        kept: list[list[int]] = []
        while len(kept) < p.queries:
            u = _uniform_ints(stream, dim, low, high)
            row = 1 << dim | sum((v & 1) << i for i, v in enumerate(u))  # bit `dim` is the 1
            while row:
                lead = row.bit_length() - 1
                if lead not in basis:
                    basis[lead] = row
                    kept.append(u)
                    break
                row ^= basis[lead]
        u_t = torch.tensor(kept, dtype=torch.float64)  # (queries, D)
        return ((u_t + 0.5) / scale).to(torch.float32).view(p.queries, *p.input_shape)

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see `verifier.keyfile`)."""
        meta = asdict(self.params)
        meta["input_shape"] = list(self.params.input_shape)
        return keyfile.dump(NAME, {"secret": torch.tensor(list(self.secret), dtype=torch.uint8)},
                            {"params": meta})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes`; raises keyfile.KeyFormatError on a bad blob."""
        _, t, meta = keyfile.load(blob, NAME)
        try:
            params = Params(**meta["params"])
            secret = bytes(t["secret"].tolist())
        except (KeyError, TypeError, ValueError) as e:
            raise keyfile.KeyFormatError(
                f"malformed output_signature key: {type(e).__name__}: {e}") from None
        if len(secret) != 32:
            raise keyfile.KeyFormatError(
                f"malformed output_signature key: secret of {len(secret)} bytes, expected 32")
        return cls(params, secret)

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: queries and hash derive from the secret."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match: the strongest evidence this key can give."""
        return self.params.queries * (self.params.classes - 1) * math.log10(0.5)

    def public_params(self) -> dict[str, Any]:
        """What may be published: the parameters (no secret, no hash key, no queries)."""
        d = asdict(self.params)
        d["input_shape"] = list(self.params.input_shape)
        return d


def generate_key(params: Params, seed: int | bytes, model: nn.Module | None = None) -> Key:
    """Derive an `output_signature` key (independent of the model).

    Args:
        params: public parameters (input shape, classes, lattice step, query count).
        seed: an int (reproducible) or bytes (in production: `secrets.token_bytes(32)`).
        model: unused; accepted for the common contract.

    Returns:
        The Key.

    Example:
        >>> generate_key(Params(queries=8), seed=1).queries().shape
        torch.Size([8, 64])
    """
    return Key(params, _secret_from_seed(seed))


def _dither(x: torch.Tensor, a: torch.Tensor, c: torch.Tensor, scale_bits: int,
            hash_bits: int) -> torch.Tensor:
    """The keyed dither in {0, 1/2} for each (input, class): (N, C) float64."""
    modulus = float(1 << hash_bits)
    xq = torch.floor(x.reshape(x.shape[0], -1).to(torch.float64) * float(1 << scale_bits))
    q = xq - modulus * torch.floor(xq / modulus)  # (N, D) in [0, 2**b)
    h = q @ a.T + c  # (N, C) exact integers below 2**53
    h = h - modulus * torch.floor(h / modulus)
    return 0.5 * torch.floor(h / (modulus / 2))


class SignedOutput(nn.Module):
    """A model wrapped so that its logits carry a keyed output signature.

    The inner model is `self.model` (its parameters train and attack as usual); the hash key
    is held in non-trainable float64 buffers, so it is saved in state dicts and exported with
    the graph. Gradients pass straight through the (piecewise-constant) lattice rounding.
    """

    def __init__(self, model: nn.Module, key: Key) -> None:
        super().__init__()
        a, c = key.hash_key()
        self.model = model
        self.sig_a: torch.Tensor  # (C, D) keyed hash matrix
        self.sig_c: torch.Tensor  # (C,) keyed hash offsets
        self.register_buffer("sig_a", a)
        self.register_buffer("sig_c", c)
        self.delta = key.params.delta
        self.scale_bits = key.params.scale_bits
        self.hash_bits = key.params.hash_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, *input_shape) -> (N, C)
        logits = self.model(x).to(torch.float64)  # (N, C)
        d = _dither(x, self.sig_a, self.sig_c, self.scale_bits, self.hash_bits)  # (N, C)
        top = logits.max(dim=1, keepdim=True).values  # (N, 1)
        gap = top - logits  # (N, C) >= 0, zero for the top class (and exact ties)
        signed_gap = self.delta * (torch.ceil(gap / self.delta - d) + d)  # >= gap, > 0 if gap > 0
        moved = torch.where(gap > 0, top - signed_gap, logits)
        # straight-through: forward value `moved`, gradient of the identity
        return (logits + (moved - logits).detach()).to(torch.float32)


def embed(model: nn.Module, key: Key, data: Any = None, **options: Any) -> SignedOutput:
    """Wrap a model so that its logits carry the key's output signature.

    The wrapped model's top-1 prediction equals the inner model's on every input, and every
    logit moves by less than `key.params.delta`. Export it with `torch.onnx.export` to serve
    it: the signature is computed inside the graph.

    Args:
        model: a classifier returning (N, classes) logits for (N, *input_shape) inputs.
        key: from `generate_key`.
        data: unused (post-training scheme), accepted for the common contract.

    Returns:
        A SignedOutput wrapping `model` (the model itself, not a copy, sits inside).

    Raises:
        OutputSignatureError: the model's output does not have the key's shape.
    """
    if not isinstance(model, nn.Module):
        raise OutputSignatureError(f"embed expects an nn.Module, received {type(model).__name__}")
    probe = torch.zeros(1, *key.params.input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as e:  # any failure here means the shapes disagree; say which
        raise OutputSignatureError(
            f"the model cannot take inputs of shape {key.params.input_shape} from the key "
            f"({type(e).__name__}: {e}); generate the key with the model's input_shape") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, key.params.classes):
        raise OutputSignatureError(
            f"the model returns outputs of shape {tuple(out.shape[1:])} per input, the key "
            f"expects ({key.params.classes},) logits; generate the key with classes="
            f"{out.shape[-1]}")
    return SignedOutput(model, key)


def _bits_and_matches(outputs: torch.Tensor, key: Key, queries: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (query, class): whether it counts (non-top) and whether its lattice bit matches.

    Returns ((N, C) bool counted, (N, C) bool matched).
    """
    p = key.params
    a, c = key.hash_key()
    expected = _dither(queries, a, c, p.scale_bits, p.hash_bits) * 2  # (N, C) bits in {0, 1}
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
