"""The `trigger_set` key: triggers and seeded labels, with re-derivation from the seed.

Blob (verifier.keyfile, version 2): meta {version, seed, variant, classes, eps, lo, hi,
input_shape, n}; tensors `labels` (n,) int64 always, `triggers` (n, *input_shape) float32 for
the adversarial variant only (keyed_noise triggers are re-derived from the seed, not stored).
Constructing a Key (and so `from_bytes`) re-derives the labels, and for keyed_noise the
triggers, and raises `keyfile.KeyMaterialError(field, "trigger_set")` when they differ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

import verifier.schemes.trigger_set.derive as derive
from verifier import keyfile
from verifier.schemes.trigger_set.params import (
    ADVERSARIAL,
    KEYED_NOISE,
    MAX_SEED,
    NAME,
    VARIANTS,
    TriggerSetError,
)

_VERSION = 2


@dataclass(frozen=True, eq=False)
class Key:
    """A secret `trigger_set` key: trigger inputs and their seeded random labels.

    Example:
        >>> k = Key(seed=1, variant="keyed_noise", triggers=derive.noise(1, 3, (4,), 0.0, 1.0),
        ...         labels=derive.labels(1, 3, 10), classes=10, eps=0.0)
        >>> Key.from_bytes(k.to_bytes()) == k
        True
    """

    seed: int  # the only secret: labels, keyed noise, source order and PGD starts derive from it
    variant: str  # "adversarial" | "keyed_noise"
    triggers: torch.Tensor  # (n, *input_shape) float32 in [lo, hi]
    labels: torch.Tensor  # (n,) int64: derive.labels(seed, n, classes), uniform on [0, C)
    classes: int  # C
    eps: float  # adversarial: L∞ budget used to make the triggers; keyed_noise: 0
    lo: float = 0.0  # data range the triggers lie in
    hi: float = 1.0

    def __post_init__(self) -> None:
        _check_shapes(self)
        if not torch.equal(self.labels, derive.labels(self.seed, self.n, self.classes)):
            raise keyfile.KeyMaterialError("labels", NAME)
        if self.variant == KEYED_NOISE and not torch.equal(
                self.triggers, derive.noise(self.seed, self.n, self.input_shape, self.lo, self.hi)):
            raise keyfile.KeyMaterialError("triggers", NAME)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    @property
    def n(self) -> int:
        """Number of triggers."""
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one trigger input."""
        return tuple(int(s) for s in self.triggers.shape[1:])

    @property
    def owner_chosen_inputs(self) -> bool:
        """True for adversarial triggers (made from the owner's model, screened at upload);
        False for keyed noise (the seed produces them, and `from_bytes` re-derives them)."""
        return self.variant == ADVERSARIAL

    def best_log10_p(self) -> float:
        """log10 P[Binomial(n, 1/C) >= n] = n·log10(1/C): the p-value of a perfect match."""
        return self.n * math.log10(1.0 / self.classes)

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see verifier.keyfile)."""
        meta = {"version": _VERSION, "seed": self.seed, "variant": self.variant,
                "classes": self.classes, "eps": self.eps, "lo": self.lo, "hi": self.hi,
                "input_shape": list(self.input_shape), "n": self.n}
        tensors = {"labels": self.labels}
        if self.variant == ADVERSARIAL:
            tensors["triggers"] = self.triggers
        return keyfile.dump(NAME, tensors, meta)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes`, re-deriving its seeded material.

        Raises:
            keyfile.KeyMaterialError: the labels (or keyed-noise triggers) are not the seed's.
            keyfile.KeyFormatError: not a `trigger_set` key, or inconsistent contents.
        """
        _, tensors, meta = keyfile.load(blob, NAME)
        try:
            if meta["version"] != _VERSION:
                raise ValueError(f"version {meta['version']}, expected {_VERSION} (keys of earlier "
                                 "versions carried unseeded labels: regenerate the key)")
            seed, variant = int(meta["seed"]), str(meta["variant"])
            shape = tuple(int(s) for s in meta["input_shape"])
            lo, hi = float(meta["lo"]), float(meta["hi"])
            if variant == KEYED_NOISE:
                if "triggers" in tensors:
                    raise ValueError("a keyed_noise key stores no triggers (they derive from the seed)")
                triggers = derive.noise(seed, int(meta["n"]), shape, lo, hi)
            else:
                triggers = tensors["triggers"]
            key = cls(seed=seed, variant=variant, triggers=triggers, labels=tensors["labels"],
                      classes=int(meta["classes"]), eps=float(meta["eps"]), lo=lo, hi=hi)
            if key.n != int(meta["n"]) or key.input_shape != shape:
                raise ValueError(f"n / input_shape in the metadata ({meta['n']}, {list(shape)}) "
                                 f"differ from the tensors ({key.n}, {list(key.input_shape)})")
            return key
        except keyfile.KeyMaterialError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise keyfile.KeyFormatError(f"malformed trigger_set key: {e}") from None

    def public_params(self) -> dict[str, Any]:
        """What may be published with a commitment: sizes only, no trigger, no label."""
        return {"scheme": NAME, "variant": self.variant, "triggers": self.n,
                "classes": self.classes, "eps": self.eps, "input_shape": list(self.input_shape),
                "p0": 1.0 / self.classes}


def _check_shapes(key: Key) -> None:
    if key.variant not in VARIANTS:
        raise TriggerSetError(f"unknown variant `{key.variant}`; expected one of {', '.join(VARIANTS)}")
    if isinstance(key.seed, bool) or not isinstance(key.seed, int) or not 0 <= key.seed < MAX_SEED:
        raise TriggerSetError(f"seed must be an integer in [0, 2^63), received {key.seed!r}")
    n = key.labels.shape[0] if key.labels.dim() == 1 else -1
    if key.labels.dtype != torch.int64 or n < 1:
        raise TriggerSetError(f"labels must be int64 of shape (n,), n >= 1; got {key.labels.dtype} "
                              f"{tuple(key.labels.shape)}")
    if key.triggers.dtype != torch.float32 or key.triggers.dim() < 2 or key.triggers.shape[0] != n:
        raise TriggerSetError(f"triggers must be float32 (n, ...) with n = len(labels) = {n}; got "
                              f"{key.triggers.dtype} {tuple(key.triggers.shape)}")
    if key.classes < 2:
        raise TriggerSetError(f"classes must be >= 2, got {key.classes}")
    if key.eps < 0 or not key.lo < key.hi:
        raise TriggerSetError(f"need eps >= 0 and lo < hi; got {key.eps}, [{key.lo}, {key.hi}]")
    if not bool(torch.isfinite(key.triggers).all()) or float(key.triggers.min()) < key.lo \
            or float(key.triggers.max()) > key.hi:
        raise TriggerSetError(f"triggers must be finite and lie in [{key.lo}, {key.hi}]")
