"""`uchida` host search: find the key's layers by shape when the suspect renamed or re-laid them out.

Renaming state-dict keys, exporting to ONNX (initializers under new names, Linear weights
stored as (in, out) MatMul operands), GPT-2's Conv1D (weights stored (in, out)) and fused
projections (one (3d, d) qkv weight instead of three (d, d) ones) are all free for a thief.
When the key's layers cannot be read under their names (`key.host_layers` raises
LayerMismatch), `placements` lists every way to read them from the suspect by shape alone:

- a tensor of the key layer's shape, under any name;
- for a 2-D layer (out, in), a tensor of shape (in, out), transposed (a square tensor gives
  both orientations);
- for a 2-D layer, one of the k equal row blocks of a fused (k·out, in) tensor, or of a
  fused (in, k·out) tensor transposed, k = 2, 3, 4 (with the matching block of its bias).

A placement is one such view per key layer, no view used twice. `verify.test` extracts the
bits under every placement and reports the best count with its p-value multiplied by the
number of placements tried (Bonferroni). Why Bonferroni and not a choice by content: the
placements are fixed by the suspect's shapes and the key's public shapes alone, before any bit
is read, so each placement's count is exactly Binomial(T, 1/2) under H0 and the union bound
over them is a valid p-value whatever their dependence. Choosing one placement by content
would need a per-unit fingerprint in the key, a field the registrant chooses (`align` measures
what steering an alignment buys a forger); choosing by the bits would be data dredging. The
cost is log10(placements): 0.3 for a renamed MLP (two orientations of a square layer), about
2 for one block of a 6-layer transformer, against T·log10 2 = 77 for a perfect 256-bit match.

Example:
    >>> from verifier.schemes.uchida.key import Params, generate_key
    >>> k = generate_key(Params(bits=8, layers=("fc.weight",), shapes=((4, 16),)), seed=1)
    >>> [p.sources for p in placements({"renamed": torch.ones(16, 4)}, k)]
    [('renamed.T',)]
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from verifier.schemes.uchida.align import bias_name
from verifier.schemes.uchida.key import Key, LayerMismatch

MAX_PLACEMENTS = 4096  # more than this: refuse (log10 4096 = 3.6 of the p-value, and 4096 extractions)
_FUSED = (2, 3, 4)  # how many equal projections a fused weight may hold (qkv = 3, gate+up = 2)


@dataclass(frozen=True)
class Placement:
    """One way to read the key's layers from the suspect's tensors."""

    weights: dict[str, torch.Tensor]  # the key's layer names (and their biases) -> suspect views
    sources: tuple[str, ...]  # per key layer, where it was read: "n", "n.T", "n[1/3]", "n.T[0/2]"


def placements(weights: Mapping[str, torch.Tensor], key: Key) -> list[Placement]:
    """Every reading of the key's layers from `weights` by shape, in a fixed order.

    Args:
        weights: the suspect's named tensors (state dict, ONNX initializers).
        key: the key whose layer shapes are sought.

    Returns:
        The placements (empty when some key layer has no view of its shape). The order depends
        only on the names and shapes in `weights`, never on values.

    Raises:
        LayerMismatch: more than MAX_PLACEMENTS placements (name the layers in the suspect, or
            rename the suspect's tensors to the key's names, to test it).
    """
    views = [_views(weights, tuple(shape)) for shape in key.shapes]
    total = math.prod(len(v) for v in views)
    if total > MAX_PLACEMENTS:
        counts = ", ".join(f"`{n}` {len(v)}" for n, v in zip(key.layers, views, strict=True))
        raise LayerMismatch(f"the key's layers are not under their names and {total} readings by "
                            f"shape are possible ({counts}), more than {MAX_PLACEMENTS}: rename the "
                            "suspect's tensors to the key's layer names to test it")
    out = []
    for combo in itertools.product(*views):
        sources = tuple(src for src, _, _ in combo)
        if len({s.split("[")[0].removesuffix(".T") + _block(s) for s in sources}) < len(sources):
            continue  # one suspect tensor (or block) cannot be two of the key's layers
        named: dict[str, torch.Tensor] = {}
        for layer, (_, w, b) in zip(key.layers, combo, strict=True):
            named[layer] = w
            if b is not None:
                named[bias_name(layer)] = b
        out.append(Placement(weights=named, sources=sources))
    return out


def _block(source: str) -> str:
    return source[source.index("["):] if "[" in source else ""


def _views(weights: Mapping[str, torch.Tensor], shape: tuple[int, ...],
           ) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """(source, weight view, bias view or None) for every tensor that can hold a layer of `shape`."""
    out: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
    for name, t in weights.items():
        if not isinstance(t, torch.Tensor) or t.dim() != len(shape):
            continue
        bias = weights.get(bias_name(name))
        bias = bias.reshape(-1) if isinstance(bias, torch.Tensor) and bias.dim() == 1 else None
        if tuple(t.shape) == shape:
            out.append((name, t, _fit(bias, shape[0])))
        if len(shape) != 2:
            continue
        out_dim, in_dim = shape
        if tuple(t.shape) == (in_dim, out_dim):
            out.append((f"{name}.T", t.T, _fit(bias, out_dim)))
        for k in _FUSED:
            if tuple(t.shape) == (k * out_dim, in_dim):
                out.extend(_blocks(name, t, bias, k, out_dim))
            if tuple(t.shape) == (in_dim, k * out_dim):
                out.extend(_blocks(f"{name}.T", t.T, bias, k, out_dim))
    return out


def _blocks(source: str, t: torch.Tensor, bias: torch.Tensor | None, k: int, rows: int,
            ) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """The k row blocks of a fused (k·rows, in) weight and of its (k·rows,) bias."""
    b = _fit(bias, k * rows)
    return [(f"{source}[{j}/{k}]", t[j * rows:(j + 1) * rows],
             None if b is None else b[j * rows:(j + 1) * rows]) for j in range(k)]


def _fit(bias: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """The bias if it has one entry per output unit, else None (read as zeros)."""
    return bias if bias is not None and bias.numel() == size else None
