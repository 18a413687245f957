"""`uchida`: projection bits trained into the weights (Uchida et al., ICMR 2017). White-box.

The key holds T fair-coin bits b, a seed and the names and shapes of the host layers. The
host vector w (length M) is built from those layers (`host_vector`); the owner trains so that
sign(X·w) = b, with X a secret (T, M) projection regenerated from the seed, never stored.

Projection. A dense Gaussian X of 256 × 1M costs ~1 GB and ~0.1 s per key, too much for a
registry that tests thousands of keys against one suspect. We use a seeded Kronecker
projection instead: w is laid out row-major in an (N1, N2) grid (N2 = ceil(sqrt M),
zero-padded), and bit j = (a, b) of a t1 × t2 grid of bits is

    y_j = u_a · W · v_b,   U = (t1, N1), V = (t2, N2) with orthogonal rows of norm sqrt(N),

so X = U ⊗ V: every entry of every row is non-zero (each bit is spread over all weights),
rows are orthogonal when w fills the grid, X has the same scale as Uchida's N(0, 1) matrix,
and one key costs two small QR factorizations plus an (M × t2) product: ~3 ms for
M = 2^20 on one core (docs/schemes-uchida-trigger-set.md). Signs of the QR factors are
normalised (positive diag R), so X is the same on every LAPACK.

Test. The matches between b and the extracted bits are Binomial(T, 1/2) under H0 "the suspect
is independent of this key", whatever X and the suspect are, because b is a sequence of fair
coins drawn independently of both. A projection exactly 0 has no bit and counts as a mismatch,
which can only make the p-value larger (the null is then labelled "conservative").
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from verifier import keyfile
from verifier.result import NULL_CONSERVATIVE, NULL_EXACT, TestResult
from verifier.schemes.uchida_projection import (
    _apply,
    _factors,
    _host_len,
    _layout,
    _project,
    _subseed,
)
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

NAME = "uchida"
ACCESS = "white-box"
CLAIM = ("The suspect's weights carry this key's secret projection bits far beyond chance: its "
         "weights descend from the owner's marked model. It says nothing about a model that was "
         "only queried (distilled), and needs the weights under the committed layer names.")
_VERSION = 1
_MAX_SEED = 2**63


class UchidaError(ValueError):
    """A key that cannot be generated or used as asked (the message names the fix)."""


class CapacityError(UchidaError):
    """More bits than the host vector can carry."""


class LayerMismatch(LookupError):
    """Weights that lack a key's layer, or hold it with another shape."""


@dataclass(frozen=True)
class Params:
    """Public parameters of an `uchida` key."""

    bits: int = 256  # T: number of watermark bits (fair coins)
    layers: tuple[str, ...] = ()  # host parameter names; () = every weight of dim >= 2 (Linear, Conv)
    lam: float = 1.0  # λ: weight of the mean-over-bits BCE added to the task loss while embedding
    shapes: tuple[tuple[int, ...], ...] | None = None  # layer shapes, when no model is given


@dataclass(frozen=True)
class Key:
    """A secret `uchida` key: the bits, the seed of X and the host layers.

    Example:
        >>> k = generate_key(Params(bits=8, layers=("w",), shapes=((4, 16),)), seed=1)
        >>> Key.from_bytes(k.to_bytes()) == k
        True
    """

    seed: int  # regenerates the projection X (never stored)
    bits: tuple[int, ...]  # b ∈ {0, 1}^T, fair coins
    layers: tuple[str, ...]  # host parameter names, in host-vector order
    shapes: tuple[tuple[int, ...], ...]  # their shapes, one per layer
    lam: float  # λ used by `regularizer`

    def __post_init__(self) -> None:
        _check_key(self)

    @property
    def host_size(self) -> int:
        """M, the length of the host vector."""
        return sum(_host_len(s) for s in self.shapes)

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see verifier.keyfile)."""
        meta = {"version": _VERSION, "seed": self.seed, "layers": list(self.layers),
                "shapes": [list(s) for s in self.shapes], "lam": self.lam}
        return keyfile.dump(NAME, {"bits": torch.tensor(self.bits, dtype=torch.uint8)}, meta)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes`.

        Raises:
            keyfile.KeyFormatError: not an `uchida` key, or inconsistent contents.
        """
        _, tensors, meta = keyfile.load(blob, NAME)
        try:
            if meta["version"] != _VERSION:
                raise ValueError(f"version {meta['version']}, expected {_VERSION}")
            bits = tensors["bits"]
            if bits.dtype != torch.uint8 or bits.dim() != 1:
                raise ValueError(f"`bits` must be a 1-D uint8 tensor, got {bits.dtype} {tuple(bits.shape)}")
            return cls(seed=int(meta["seed"]), bits=tuple(int(v) for v in bits),
                       layers=tuple(str(n) for n in meta["layers"]),
                       shapes=tuple(tuple(int(d) for d in s) for s in meta["shapes"]),
                       lam=float(meta["lam"]))
        except (KeyError, TypeError, ValueError) as e:
            raise keyfile.KeyFormatError(f"malformed uchida key: {e}") from None

    def public_params(self) -> dict[str, Any]:
        """What may be published with a commitment: no bits, no seed."""
        return {"scheme": NAME, "bits": len(self.bits), "layers": list(self.layers),
                "shapes": [list(s) for s in self.shapes], "host_size": self.host_size,
                "lam": self.lam}

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: every random element derives from the seed."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match: the strongest evidence this key can give."""
        return len(self.bits) * math.log10(0.5)


def generate_key(params: Params, seed: int, model: nn.Module | Mapping[str, torch.Tensor] | None = None) -> Key:
    """Draw a fresh key: T fair-coin bits and the seed of the projection.

    Args:
        params: bits, host layers, λ; `params.shapes` stands in for the model when none is given.
        seed: a secret integer in [0, 2^63); the same seed gives the same key.
        model: the model (or its named weights) to be marked; gives the layer shapes.

    Returns:
        The key. Raises UchidaError when the layers or shapes cannot be determined, and
        CapacityError when T exceeds what the host vector can carry.

    Example:
        >>> from verifier.toy import MLP
        >>> generate_key(Params(), seed=7, model=MLP()).public_params()["host_size"]
        256
    """
    if not 0 <= seed < _MAX_SEED:
        raise UchidaError(f"seed must be an integer in [0, 2^63), received {seed}")
    if params.bits < 1:
        raise UchidaError(f"Params.bits must be >= 1, received {params.bits}")
    layers, shapes = _resolve_layers(params, model)
    g = torch.Generator().manual_seed(_subseed(seed, "bits"))
    bits = tuple(int(v) for v in torch.randint(0, 2, (params.bits,), generator=g))
    return Key(seed=seed, bits=bits, layers=layers, shapes=shapes, lam=params.lam)


def host_vector(weights: Mapping[str, torch.Tensor], key: Key,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """The host vector w: each key layer reduced as Uchida does, concatenated in key order.

    A conv kernel (out, in, *k) is averaged over its output filters and flattened (M += in·∏k);
    a linear weight (out, in) is averaged over its output rows (M += in), the same rule for a
    1×1 kernel. Averaging makes w invariant to permuting a layer's output units, which a thief
    can do for free, and leaves the task almost all of the layer's degrees of freedom.

    Args:
        weights: named tensors (a state dict, ONNX initializers); differentiable if they are.
        dtype: the dtype to average in and return (default: the weights' own).

    Returns:
        (M,) tensor. Raises LayerMismatch for a missing or reshaped layer.

    Example:
        >>> k = generate_key(Params(bits=2, layers=("w",), shapes=((2, 3),)), seed=1)
        >>> host_vector({"w": torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])}, k)
        tensor([2., 2., 2.])
    """
    parts = []
    for name, shape in zip(key.layers, key.shapes, strict=True):
        if name not in weights:
            raise LayerMismatch(f"the suspect has no weight named `{name}` (the key's layers are "
                                f"{', '.join(key.layers)})")
        t = weights[name]
        if tuple(t.shape) != shape:
            raise LayerMismatch(f"weight `{name}` has shape {tuple(t.shape)}, the key expects {shape}")
        rows = t.reshape(shape[0], -1)  # (out, in·∏k)
        parts.append(rows[0].to(dtype or t.dtype) if shape[0] == 1
                     else rows.mean(dim=0, dtype=dtype))  # (in·∏k,)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def project(weights: Mapping[str, torch.Tensor], key: Key) -> torch.Tensor:
    """X·w in float64: one real number per bit, positive where the extracted bit is 1.

    Returns:
        (T,) float64. Raises LayerMismatch as `host_vector` does.

    Example:
        >>> k = generate_key(Params(bits=4, layers=("w",), shapes=((1, 16),)), seed=1)
        >>> y = project({"w": torch.ones(1, 16)}, k)
        >>> y.shape, y.dtype
        (torch.Size([4]), torch.float64)
    """
    w = host_vector({n: t.detach() for n, t in weights.items()}, key, dtype=torch.float64)
    return _project(w, key)


@torch.no_grad()
def extract(weights: Mapping[str, torch.Tensor], key: Key) -> torch.Tensor:
    """The bits the weights carry under this key.

    Returns:
        (T,) int8: 1 where (X·w)_j > 0, 0 where < 0, and -1 where the projection is exactly 0
        (no bit: never counted as a match).

    Example:
        >>> from verifier.toy import MLP
        >>> m = MLP(); k = generate_key(Params(bits=32), seed=3, model=m)
        >>> extract(m.state_dict(), k).shape
        torch.Size([32])
    """
    y = project(weights, key)  # (T,)
    bits = (y > 0).to(torch.int8)
    bits[y == 0] = -1
    return bits


def regularizer(key: Key) -> Callable[[nn.Module], torch.Tensor]:
    """The embedding loss λ·BCE(b, σ(X·w)) as a callable on the model, for any training loop.

    Add it to the task loss (e.g. `trigger_set.embed(..., extra_loss=regularizer(key))` marks
    both schemes in one run). X is built once and kept by the callable.

    Example:
        >>> from verifier.toy import MLP
        >>> m = MLP(); loss = regularizer(generate_key(Params(), seed=1, model=m))(m)
        >>> loss.dim()
        0
    """
    target = torch.tensor(key.bits, dtype=torch.float32)  # (T,)
    U, V = (t.to(torch.float32) for t in _factors(key))

    def loss(model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        w = host_vector(params, key)  # (M,)
        y = _apply(w, U, V, key)  # (T,)
        return key.lam * nn.functional.binary_cross_entropy_with_logits(y, target)

    return loss


def embed(model: nn.Module, key: Key, data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
          *, epochs: int = 10, lr: float = 1e-3,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None) -> nn.Module:
    """Fine-tune `model` in place on task cross-entropy + λ·BCE(b, σ(X·w)).

    Args:
        data: (inputs, labels) batches; a one-shot iterator is materialised once and
            replayed each epoch, a DataLoader is iterated afresh each epoch.
        epochs: passes over `data`.
        lr: Adam learning rate (a fresh optimizer over all parameters).
        extra_loss: another loss on the model to add (e.g. a second scheme's regularizer).

    Returns:
        The same model, marked, in eval mode. Raises UchidaError without data, LayerMismatch
        when the model lacks a key layer.

    Example:
        >>> from verifier import toy
        >>> s = toy.digits(); m = toy.MLP(); k = generate_key(Params(bits=64), seed=1, model=m)
        >>> m = embed(m, k, toy.batches(s.x_train, s.y_train, epochs=3), epochs=1, lr=3e-3)
        >>> test(Suspect.from_module(m), k).p_value < 1e-9
        True
    """
    if data is None:
        raise UchidaError("uchida trains its bits in: pass data=<(inputs, labels) batches>")
    host_vector(dict(model.named_parameters()), key)  # fail early on a layer mismatch
    batches = _replayable(data)
    reg = regularizer(key)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for xb, yb in batches:
            loss = nn.functional.cross_entropy(model(xb), yb) + reg(model)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Count the key's bits that the suspect's weights carry; exact binomial tail at p = 1/2.

    Not applicable when the suspect offers no weights, lacks a key layer or holds it with
    another shape (the reason is in `details["reason"]`).

    Example:
        >>> from verifier.toy import MLP
        >>> m = MLP(); k = generate_key(Params(bits=64), seed=2, model=m)
        >>> test(Suspect.from_module(m), k).p_value > 1e-6   # an unmarked model
        True
    """
    if not suspect.has_weights:
        return TestResult.not_applicable(NAME, "uchida is a white-box test: the suspect offers "
                                               "no weights (black-box access only)")
    try:
        got = extract(suspect.weights, key)  # (T,)
    except LayerMismatch as e:
        return TestResult.not_applicable(NAME, str(e))
    want = torch.tensor(key.bits, dtype=torch.int8)
    matches = int((got == want).sum())
    zeros = int((got < 0).sum())
    n = len(key.bits)
    return TestResult.from_log10_p(
        NAME, statistic=matches, n=n, log10_p=log10_binom_sf(matches, n, 0.5),
        null=NULL_EXACT if zeros == 0 else NULL_CONSERVATIVE, claim=CLAIM,
        details={"matches": matches, "bits": n, "bit_error_rate": (n - matches) / n,
                 "zero_projections": zeros, "layers": list(key.layers), "p0": 0.5})


# ---------------------------------------------------------------------------------------------

def _resolve_layers(params: Params, model: nn.Module | Mapping[str, torch.Tensor] | None,
                    ) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """The key's layer names and shapes, from the model if given, else from `params.shapes`."""
    if model is not None:
        named = model.state_dict() if isinstance(model, nn.Module) else model
        layers = params.layers or tuple(n for n, t in named.items()
                                        if n.endswith("weight") and t.dim() >= 2)
        missing = [n for n in layers if n not in named]
        if missing:
            raise UchidaError(f"the model has no parameter named {', '.join(map(repr, missing))}; "
                              f"its parameters are {', '.join(named)}")
        shapes = tuple(tuple(named[n].shape) for n in layers)
    elif params.shapes is not None and params.layers:
        layers, shapes = params.layers, tuple(tuple(s) for s in params.shapes)
    else:
        raise UchidaError("an uchida key needs the host layers' shapes to size its projection: "
                          "pass model=<the model to mark>, or Params(layers=..., shapes=...)")
    if not layers:
        raise UchidaError("the model has no weight of dim >= 2 to carry bits; name the host "
                          "layers in Params(layers=...)")
    _check_shapes(layers, shapes, params.bits)
    return layers, shapes


def _check_shapes(layers: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], t: int) -> None:
    """Raise UchidaError unless the layers are distinct weights of dim >= 2 that carry T bits."""
    if len(layers) != len(shapes):
        raise UchidaError(f"{len(layers)} layers but {len(shapes)} shapes")
    if len(set(layers)) != len(layers):
        raise UchidaError(f"a layer is named twice in {layers}")
    for name, shape in zip(layers, shapes, strict=True):
        if len(shape) < 2 or min(shape) < 1:
            raise UchidaError(f"layer `{name}` has shape {shape}; a host layer must be a weight "
                              "of dim >= 2 (Linear or Conv), not a bias or a norm scale")
    m = sum(_host_len(s) for s in shapes)
    cap = _layout(m)[2]
    if t > cap:
        raise CapacityError(f"{t} bits do not fit a host vector of {m} values "
                            f"(capacity {cap} for layers {', '.join(layers)}): use "
                            f"Params(bits<={cap}) or add host layers")


def _check_key(key: Key) -> None:
    if not 0 <= key.seed < _MAX_SEED:
        raise UchidaError(f"seed must be an integer in [0, 2^63), received {key.seed}")
    if not key.bits or any(b not in (0, 1) for b in key.bits):
        raise UchidaError("bits must be a non-empty sequence of 0s and 1s")
    _check_shapes(key.layers, key.shapes, len(key.bits))


def _replayable(data: Iterable[Any]) -> Iterable[Any]:
    """`data` itself if it can be iterated again (a DataLoader, a list), else a list of it."""
    return list(data) if iter(data) is data else data
