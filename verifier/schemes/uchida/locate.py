"""`uchida` host search: find the key's layers by shape when the suspect renamed or re-laid them out.

When the key's layers cannot be read under their names (`key.host_layers` raises
LayerMismatch), `placements` lists every way to read them from the suspect by shape alone:
one view per key layer (`verifier.schemes._layout.views`: renamed, transposed, or a block of a
fused tensor), no suspect tensor or block used twice. `verify.test` extracts the
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

from verifier.schemes._layout import bias_name, views
from verifier.schemes.uchida.key import CANONICAL, Key, LayerMismatch, chain_mismatch

MAX_PLACEMENTS = 4096  # more than this: refuse (log10 4096 = 3.6 of the p-value, and 4096 extractions)


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
        only on the names and shapes in `weights`, never on values. For an invariant-host key
        with no reading of the exact shapes, the readings of other hidden widths (`_widened`):
        which set is searched is decided by shapes alone too, so the union bound still holds.

    Raises:
        LayerMismatch: more than MAX_PLACEMENTS placements (name the layers in the suspect, or
            rename the suspect's tensors to the key's layer names, to test it).
    """
    per_layer = [views(weights, tuple(shape)) for shape in key.shapes]
    total = math.prod(len(v) for v in per_layer)
    if total == 0 and key.host in CANONICAL:
        return _widened(weights, key)
    if total > MAX_PLACEMENTS:
        counts = ", ".join(f"`{n}` {len(v)}" for n, v in zip(key.layers, per_layer, strict=True))
        raise LayerMismatch(f"the key's layers are not under their names and {total} readings by "
                            f"shape are possible ({counts}), more than {MAX_PLACEMENTS}: rename the "
                            "suspect's tensors to the key's layer names to test it")
    out = []
    for combo in itertools.product(*per_layer):
        if len({v.tensor for v in combo}) < len(combo):
            continue  # one suspect tensor (or block) cannot be two of the key's layers
        named: dict[str, torch.Tensor] = {}
        for layer, view in zip(key.layers, combo, strict=True):
            named[layer] = view.weight
            if view.bias is not None:
                named[bias_name(layer)] = view.bias
        out.append(Placement(weights=named, sources=tuple(v.source for v in combo)))
    return out


def _widened(weights: Mapping[str, torch.Tensor], key: Key) -> list[Placement]:
    """Readings of an invariant-host chain whose hidden widths differ from the key's.

    A thief who adds dummy units (attacks.dummy_neurons) and renames the tensors leaves no
    tensor of the key's shapes. The invariant host accepts other unit counts
    (`key.chain_mismatch`), so here each key layer may be read from any tensor, as stored or
    transposed (2-D), whose shape continues the chain chosen so far; fused blocks are not
    searched. Depth-first over the key's layers, tensors in the order of `weights`: shapes
    only, never values.
    """
    candidates = []  # every (source, weight, bias) reading of a tensor, in the order of `weights`
    for name, t in weights.items():
        if not isinstance(t, torch.Tensor) or t.dim() < 2:
            continue
        b = weights.get(bias_name(name))
        bias = b.reshape(-1) if isinstance(b, torch.Tensor) and b.dim() == 1 else None
        candidates.append((name, t, bias if bias is not None and bias.numel() == t.shape[0] else None))
        if t.dim() == 2:
            candidates.append((f"{name}.T", t.T,
                               bias if bias is not None and bias.numel() == t.shape[1] else None))
    out: list[Placement] = []

    def extend(chosen: list[tuple[str, torch.Tensor, torch.Tensor | None]]) -> None:
        if len(out) > MAX_PLACEMENTS:
            return
        if len(chosen) == len(key.layers):
            named: dict[str, torch.Tensor] = {}
            for layer, (_, w, bias) in zip(key.layers, chosen, strict=True):
                named[layer] = w
                if bias is not None:
                    named[bias_name(layer)] = bias
            out.append(Placement(weights=named, sources=tuple(c[0] for c in chosen)))
            return
        used = {c[0].removesuffix(".T") for c in chosen}
        for c in candidates:
            if c[0].removesuffix(".T") in used:
                continue
            if chain_mismatch(key, [tuple(x[1].shape) for x in chosen] + [tuple(c[1].shape)]) is None:
                extend(chosen + [c])

    extend([])
    if len(out) > MAX_PLACEMENTS:
        raise LayerMismatch(f"the key's layers are not under their names nor of their shapes, "
                            f"and more than {MAX_PLACEMENTS} readings of other widths are "
                            "possible: rename the suspect's tensors to the key's layer names to "
                            "test it")
    return out
