"""Where a layer of a given shape can sit in a suspect's tensors: renamed, transposed or fused.

Renaming state-dict keys, exporting to ONNX (initializers under new names, Linear weights
stored (in, out) as MatMul operands), GPT-2's Conv1D (weights stored (in, out)) and fused
projections (one (3d, d) qkv weight for three (d, d) ones) are free for a thief. `views` lists
every reading of a tensor of `shape` that such a rewrite can leave, by shape alone:

- a tensor of that shape, under any name;
- for a 2-D shape (out, in), a tensor of shape (in, out), transposed (a square tensor gives
  both orientations);
- for a 2-D shape, each of the k equal row blocks of a fused (k·out, in) tensor, or of a fused
  (in, k·out) tensor transposed, k = 2, 3, 4, with the matching block of its bias;
- for a 2-D shape (k·r, in), k = 2, 3, 4, the split form of a fused layer: the k tensors of
  shape (r, in) (or (in, r), transposed) that share one parent module (`...attention.self` for
  `query`, `key`, `value`), when it has exactly k of them, stacked in the order of `weights`.

The list depends only on the names and shapes of the suspect's tensors, never on their values:
the schemes that search it (`uchida.locate`, `seal.verify`) rely on that for their nulls.

Example:
    >>> [v.source for v in views({"h.0.c_attn.weight": torch.zeros(4, 12)}, (4, 4))]
    ['h.0.c_attn.weight.T[0/3]', 'h.0.c_attn.weight.T[1/3]', 'h.0.c_attn.weight.T[2/3]']
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

FUSED = (2, 3, 4)  # how many equal projections a fused weight may hold (qkv = 3, gate+up = 2)


@dataclass(frozen=True)
class View:
    """One reading of a layer from a suspect tensor."""

    source: str  # "n", "n.T", "n[1/3]" or "n.T[0/2]": the tensor, orientation and block
    weight: torch.Tensor  # the layer's weight as the key expects it, (out, in, *k)
    bias: torch.Tensor | None  # (out,) its bias, when the tensor has one of that size

    @property
    def tensor(self) -> str:
        """The identity of the storage read: name and block, not orientation."""
        name, _, block = self.source.partition("[")
        return name.removesuffix(".T") + ("[" + block if block else "")


def bias_name(weight_name: str) -> str:
    """The bias that goes with a weight: `fc1.weight` -> `fc1.bias`."""
    return weight_name[: -len("weight")] + "bias" if weight_name.endswith("weight") else weight_name + ".bias"


def views(weights: Mapping[str, torch.Tensor], shape: tuple[int, ...]) -> list[View]:
    """Every reading of a layer of `shape` from `weights`, in the order of `weights`.

    Args:
        weights: the suspect's named tensors.
        shape: the layer's shape, (out, in, *k).

    Returns:
        The views; biases are read from `<name minus "weight">bias` when that has the right size.
    """
    out: list[View] = []
    for name, t in weights.items():
        if not isinstance(t, torch.Tensor) or t.dim() != len(shape):
            continue
        b = weights.get(bias_name(name))
        bias = b.reshape(-1) if isinstance(b, torch.Tensor) and b.dim() == 1 else None
        if tuple(t.shape) == shape:
            out.append(View(name, t, _fit(bias, shape[0])))
        if len(shape) != 2:
            continue
        rows, cols = shape
        if tuple(t.shape) == (cols, rows):
            out.append(View(f"{name}.T", t.T, _fit(bias, rows)))
        for k in FUSED:
            if tuple(t.shape) == (k * rows, cols):
                out.extend(_blocks(name, t, bias, k, rows))
            if tuple(t.shape) == (cols, k * rows):
                out.extend(_blocks(f"{name}.T", t.T, bias, k, rows))
    if len(shape) == 2:
        out.extend(_stacked(weights, shape))
    return out


def _stacked(weights: Mapping[str, torch.Tensor], shape: tuple[int, ...]) -> list[View]:
    """Split projections stacked back into the fused (k·r, in) layer of `shape` (see above)."""
    rows, cols = shape
    out: list[View] = []
    for k in FUSED:
        if rows % k:
            continue
        part = rows // k
        groups: dict[str, list[View]] = {}  # parent module (and orientation) -> its tensors
        for name, t in weights.items():
            if not isinstance(t, torch.Tensor) or t.dim() != 2:
                continue
            b = weights.get(bias_name(name))
            bias = _fit(b.reshape(-1), part) if isinstance(b, torch.Tensor) and b.dim() == 1 else None
            for suffix, w in (("", t), (".T", t.T)):
                if tuple(w.shape) == (part, cols):
                    groups.setdefault(_parent(name) + suffix, []).append(View(name + suffix, w, bias))
        for group in groups.values():
            if len(group) != k:
                continue
            parts = [v.bias for v in group if v.bias is not None]
            out.append(View("+".join(v.source for v in group), torch.cat([v.weight for v in group]),
                            torch.cat(parts) if len(parts) == k else None))
    return out


def _parent(name: str) -> str:
    """The module that holds a weight: `a.self.query.weight` -> `a.self`."""
    parts = name.split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else ""


def _blocks(source: str, t: torch.Tensor, bias: torch.Tensor | None, k: int, rows: int) -> list[View]:
    """The k row blocks of a fused (k·rows, in) weight and of its (k·rows,) bias."""
    b = _fit(bias, k * rows)
    return [View(f"{source}[{j}/{k}]", t[j * rows:(j + 1) * rows],
                 None if b is None else b[j * rows:(j + 1) * rows]) for j in range(k)]


def _fit(bias: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """The bias if it has one entry per output unit, else None."""
    return bias if bias is not None and bias.numel() == size else None
