"""`uchida` keys: parameters, generation, and the blob format that re-derives the bits.

A key is (seed, bits, layers, shapes, λ). The bits are T fair coins drawn from the seed by the
keyed DRBG (`verifier.schemes._keyed`, HMAC-SHA256), the projection X from the seed too
(`projection`); neither may be chosen. A `Key` whose bits are not the ones its seed derives
cannot be built: the constructor (hence `Key.from_bytes`, the registry at upload, the workers
and `hallmark audit`) raises `keyfile.KeyMaterialError("bits", "uchida")`. This is what stops
the majority-sign forgery (bits set to the signs a model already has): the forger's only free
fields are the seed, whose search costs about 1/p tries, and the choice of host layers, each
choice being one more try of the same search (docs/schemes-uchida-trigger-set.md, "Forgery").
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from verifier import keyfile
from verifier.schemes._keyed import drbg_u64, secret_from_seed
from verifier.schemes.uchida.projection import host_len, layout

NAME = "uchida"
_VERSION = 2  # 2: bits from the HMAC-SHA256 DRBG over the seed (1 drew them from torch's RNG)
_MAX_SEED = 2**63
_SEED_DOMAIN = b"hallmark/uchida/seed/v2"


class UchidaError(ValueError):
    """A key that cannot be generated or used as asked (the message names the fix)."""


class CapacityError(UchidaError):
    """More bits than the host vector can carry."""


class LayerMismatch(LookupError):
    """Weights that lack a key's layer, or hold it with another shape."""


HOSTS = ("mean", "invariant", "moments")  # the host-vector rules a key may name (`host`, `align`)
CANONICAL = ("invariant", "moments")  # the rules computed on the canonical form of a layer chain


@dataclass(frozen=True)
class Params:
    """Public parameters of an `uchida` key."""

    bits: int = 256  # T: watermark bits; T < 80 can never attribute (the registry refuses it)
    layers: tuple[str, ...] = ()  # host parameter names; () = every weight of dim >= 2 (Linear, Conv)
    lam: float = 1.0  # λ: weight of the mean-over-bits BCE added to the task loss while embedding
    shapes: tuple[tuple[int, ...], ...] | None = None  # layer shapes, when no model is given
    host: str = "mean"  # "mean": rows averaged; "invariant" / "moments": canonical form (align.py)


def host_layers(weights: Mapping[str, torch.Tensor],
                key: Key) -> list[tuple[str, tuple[int, ...], torch.Tensor]]:
    """The key's host layers in key order, as (name, shape, tensor) read from `weights`.

    Raises:
        LayerMismatch: a layer is missing, or held with another shape than the key's (for an
            invariant host: with shapes that `chain_mismatch` refuses).
    """
    out = []
    for name, shape in zip(key.layers, key.shapes, strict=True):
        if name not in weights:
            raise LayerMismatch(f"the suspect has no weight named `{name}` (the key's layers are "
                                f"{', '.join(key.layers)})")
        t = weights[name]
        if tuple(t.shape) != shape and key.host not in CANONICAL:
            raise LayerMismatch(f"weight `{name}` has shape {tuple(t.shape)}, the key expects {shape}")
        out.append((name, shape, t))
    if key.host in CANONICAL:
        why = chain_mismatch(key, [tuple(t.shape) for _, _, t in out])
        if why is not None:
            raise LayerMismatch(why)
    return out


def chain_mismatch(key: Key, shapes: list[tuple[int, ...]]) -> str | None:
    """Why suspect layers of `shapes` cannot be the key's invariant-host chain (None if they can).

    `shapes` may be a prefix: then only the key's first len(shapes) layers are checked.

    An invariant host is computed on a canonical form whose unit counts are the suspect's own
    (`align`: dummy units dropped, split units merged), so a hidden layer may be wider (or
    narrower) than the key's: each layer must keep the key's kernel size and number of
    dimensions, the first layer the key's input width, and each later layer must read the
    previous layer's outputs (its input width = the previous layer's units × the key's values
    per channel, which is 1 between Linear layers and the flattened map size after a conv).
    The rule reads shapes only, never values, so it steers nothing.

    Example:
        >>> k = generate_key(Params(bits=8, host="invariant", layers=("a", "b"),
        ...                         shapes=((4, 6), (2, 4))), seed=1)
        >>> chain_mismatch(k, [(7, 6), (2, 7)]) is None, chain_mismatch(k, [(7, 6), (2, 4)])[:12]
        (True, 'layer `b` re')
    """
    if len(shapes) > len(key.shapes):
        return f"{len(shapes)} layers for a key of {len(key.shapes)}"
    for i, (name, want, got) in enumerate(zip(key.layers, key.shapes, shapes, strict=False)):
        if len(got) != len(want) or got[2:] != want[2:] or min(got) < 1:
            return f"weight `{name}` has shape {got}, the key expects {want} (or other unit counts)"
        if i == 0 and got[1] != want[1]:
            return f"weight `{name}` has shape {got}: the key's chain reads {want[1]} inputs"
        if i > 0:
            per_unit = want[1] // key.shapes[i - 1][0]  # values per previous unit (1, or a map)
            if got[1] != shapes[i - 1][0] * per_unit:
                return (f"layer `{name}` reads {got[1]} inputs, not the {shapes[i - 1][0]} units × "
                        f"{per_unit} of the suspect's previous layer `{key.layers[i - 1]}`")
    return None


def derive_bits(seed: int, count: int) -> tuple[int, ...]:
    """The key's T fair-coin bits: the seed's DRBG output read as bits, most significant first.

    The DRBG is HMAC-SHA256 in counter mode (`_keyed.drbg_u64`, label "bits"); bit i is bit
    63 − (i mod 64) of its 64-bit word ⌊i/64⌋. Portable (SHA-256 only, no floating point, no
    framework RNG), so a key parses the same on every machine and every version of torch.

    Example:
        >>> derive_bits(1, 8) == derive_bits(1, 16)[:8]
        True
    """
    if not 0 <= seed < _MAX_SEED:
        raise UchidaError(f"seed must be an integer in [0, 2^63), received {seed}")
    stream = drbg_u64(secret_from_seed(seed, _SEED_DOMAIN, UchidaError), b"bits")
    words = [next(stream) for _ in range(-(-count // 64))]
    return tuple((words[i // 64] >> (63 - i % 64)) & 1 for i in range(count))


@dataclass(frozen=True)
class Key:
    """A secret `uchida` key: the seed, the bits it derives, and the host layers.

    Example:
        >>> k = generate_key(Params(bits=8, layers=("w",), shapes=((4, 16),)), seed=1)
        >>> Key.from_bytes(k.to_bytes()) == k
        True
    """

    seed: int  # regenerates the bits and the projection X (X is never stored)
    bits: tuple[int, ...]  # b ∈ {0, 1}^T = derive_bits(seed, T); any other value is refused
    layers: tuple[str, ...]  # host parameter names, in host-vector order
    shapes: tuple[tuple[int, ...], ...]  # their shapes, one per layer
    lam: float  # λ used by `regularizer`
    host: str = "mean"  # the host-vector rule: "mean" (host.py), "invariant" or "moments" (align.py)

    def __post_init__(self) -> None:
        _check_key(self)
        if self.bits != derive_bits(self.seed, len(self.bits)):
            raise keyfile.KeyMaterialError("bits", NAME)

    @property
    def host_size(self) -> int:
        """M, the length of the host vector."""
        return host_size(self.host, self.shapes)

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see verifier.keyfile)."""
        meta = {"version": _VERSION, "seed": self.seed, "layers": list(self.layers),
                "shapes": [list(s) for s in self.shapes], "lam": self.lam, "host": self.host}
        return keyfile.dump(NAME, {"bits": torch.tensor(self.bits, dtype=torch.uint8)}, meta)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes`, re-deriving the bits from the seed.

        Raises:
            keyfile.KeyMaterialError: the stored bits are not the ones the seed derives.
            keyfile.KeyFormatError: not an `uchida` key, or inconsistent contents.
        """
        _, tensors, meta = keyfile.load(blob, NAME)
        try:
            if meta["version"] != _VERSION:
                raise ValueError(
                    f"version {meta['version']}, expected {_VERSION}" + (
                        " (version 1 drew its bits from torch's RNG, which the registry cannot "
                        "re-derive portably: regenerate the key with generate_key)"
                        if meta["version"] == 1 else ""))
            bits = tensors["bits"]
            if bits.dtype != torch.uint8 or bits.dim() != 1:
                raise ValueError(f"`bits` must be a 1-D uint8 tensor, got {bits.dtype} {tuple(bits.shape)}")
            seed, lam = int(meta["seed"]), float(meta["lam"])
            layers = tuple(str(n) for n in meta["layers"])
            shapes = tuple(tuple(int(d) for d in s) for s in meta["shapes"])
            values = tuple(int(v) for v in bits)
            host = str(meta.get("host", "mean"))
            _check_key_fields(seed, values, layers, shapes, lam, host)
        except (KeyError, TypeError, ValueError) as e:
            raise keyfile.KeyFormatError(f"malformed uchida key: {e}") from None
        # the constructor re-derives the bits: KeyMaterialError when they differ
        return cls(seed=seed, bits=values, layers=layers, shapes=shapes, lam=lam, host=host)

    def public_params(self) -> dict[str, Any]:
        """What may be published with a commitment: no bits, no seed."""
        return {"scheme": NAME, "bits": len(self.bits), "layers": list(self.layers),
                "shapes": [list(s) for s in self.shapes], "host_size": self.host_size,
                "lam": self.lam, "host": self.host}

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: every random element derives from the seed."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match (T of T bits): T·log10(1/2), exact."""
        return len(self.bits) * math.log10(0.5)


def generate_key(params: Params, seed: int, model: nn.Module | Mapping[str, torch.Tensor] | None = None) -> Key:
    """Draw a fresh key: T fair-coin bits and the projection, both derived from the seed.

    A key of fewer than 80 bits is possible (unit tests use them) but can never reach the
    registry's forgery floor: the registry refuses it at upload (`verifier.forgery`).

    Args:
        params: bits, host layers, λ; `params.shapes` stands in for the model when none is given.
        seed: a secret integer in [0, 2^63) (draw it with `secrets.randbits(63)`); the same seed
            gives the same key.
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
    return Key(seed=seed, bits=derive_bits(seed, params.bits), layers=layers, shapes=shapes,
               lam=params.lam, host=params.host)


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
    _check_shapes(layers, shapes, params.bits, params.host)
    _check_host(params.host, layers, shapes)
    return layers, shapes


def host_size(host: str, shapes: tuple[tuple[int, ...], ...]) -> int:
    """M, the host vector's length under a host rule for layers of these shapes.

    "mean" and "invariant": Σ_l fan-in_l (one value per input of each layer). "moments": the
    upper triangles of the second-moment matrices of every layer's unit descriptors but the
    last layer's, Σ_{l<L} (h_l + 1)(h_l + 2)/2 with h_l = fan-in_l (`align.moment_host`).

    Example:
        >>> host_size("mean", ((96, 64), (10, 96))), host_size("moments", ((96, 64), (10, 96)))
        (160, 2145)
    """
    if host == "moments":
        return sum((host_len(s) + 1) * (host_len(s) + 2) // 2 for s in shapes[:-1])
    return sum(host_len(s) for s in shapes)


def _check_shapes(layers: tuple[str, ...], shapes: tuple[tuple[int, ...], ...], t: int,
                  host: str = "mean") -> None:
    """Raise UchidaError unless the layers are distinct weights of dim >= 2 that carry T bits."""
    if len(layers) != len(shapes):
        raise UchidaError(f"{len(layers)} layers but {len(shapes)} shapes")
    if len(set(layers)) != len(layers):
        raise UchidaError(f"a layer is named twice in {layers}")
    for name, shape in zip(layers, shapes, strict=True):
        if len(shape) < 2 or min(shape) < 1:
            raise UchidaError(f"layer `{name}` has shape {shape}; a host layer must be a weight "
                              "of dim >= 2 (Linear or Conv), not a bias or a norm scale")
    if host == "moments" and len(shapes) < 2:
        raise UchidaError(f"host \"moments\" reads the descriptors of every layer but the last, "
                          f"so it needs a chain of >= 2 layers; received {', '.join(layers)}")
    m = host_size(host, shapes)
    cap = layout(m)[2]
    if t > cap:
        raise CapacityError(f"{t} bits do not fit a host vector of {m} values "
                            f"(capacity {cap} for layers {', '.join(layers)}): use "
                            f"Params(bits<={cap}) or add host layers")


def _check_host(host: str, layers: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> None:
    """Raise UchidaError unless `host` is known and, for "invariant" and "moments", the layers
    form a chain.

    A chain: each layer's inputs are the previous layer's outputs. Conv or Linear after a
    layer of `out` units takes `out` input channels (shape[1] == out); a Linear layer after a
    conv layer takes its flattened output, a whole number of values per channel
    (shape[1] % out == 0). A conv layer after a Linear layer is not a chain.
    """
    if host not in HOSTS:
        raise UchidaError(f"host must be one of {', '.join(HOSTS)}, received {host!r}")
    if host not in CANONICAL:
        return
    for i in range(len(layers) - 1):
        (a, sa), (b, sb) = (layers[i], shapes[i]), (layers[i + 1], shapes[i + 1])
        flatten = len(sa) > 2 and len(sb) == 2  # conv -> Linear: the conv output flattened
        if len(sa) == 2 and len(sb) > 2:
            raise UchidaError(f"layers `{a}` {sa} and `{b}` {sb} do not chain: a conv layer "
                              "cannot follow a Linear layer; list the conv layers first")
        if sb[1] != sa[0] and not (flatten and sb[1] % sa[0] == 0):
            raise UchidaError(f"layers `{a}` {sa} and `{b}` {sb} do not chain (out {sa[0]} != "
                              f"in {sb[1]}): list consecutive Linear or conv layers in "
                              "Params(layers=...)")


def _check_key_fields(seed: int, bits: tuple[int, ...], layers: tuple[str, ...],
                      shapes: tuple[tuple[int, ...], ...], lam: float, host: str) -> None:
    if not 0 <= seed < _MAX_SEED:
        raise UchidaError(f"seed must be an integer in [0, 2^63), received {seed}")
    if not bits or any(b not in (0, 1) for b in bits):
        raise UchidaError("bits must be a non-empty sequence of 0s and 1s")
    _check_shapes(layers, shapes, len(bits), host)
    _check_host(host, layers, shapes)


def _check_key(key: Key) -> None:
    _check_key_fields(key.seed, key.bits, key.layers, key.shapes, key.lam, key.host)
