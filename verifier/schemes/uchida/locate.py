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
from verifier.schemes.uchida.key import Key, LayerMismatch

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
        only on the names and shapes in `weights`, never on values.

    Raises:
        LayerMismatch: more than MAX_PLACEMENTS placements (name the layers in the suspect, or
            rename the suspect's tensors to the key's layer names, to test it).
    """
    per_layer = [views(weights, tuple(shape)) for shape in key.shapes]
    total = math.prod(len(v) for v in per_layer)
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
