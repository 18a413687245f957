"""`uchida` host vector: the key's layers reduced to one vector w, the carrier of the bits.

Example:
    >>> from verifier.schemes.uchida.key import Params, generate_key
    >>> k = generate_key(Params(bits=2, layers=("w",), shapes=((2, 3),)), seed=1)
    >>> host_vector({"w": torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])}, k)
    tensor([2., 2., 2.])
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from verifier.schemes.uchida.align import invariant_host, moment_host
from verifier.schemes.uchida.key import Key, LayerMismatch, host_layers

__all__ = ["LayerMismatch", "host_vector"]


def host_vector(weights: Mapping[str, torch.Tensor], key: Key,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """The host vector w: each key layer reduced as Uchida does, concatenated in key order.

    A conv kernel (out, in, *k) is averaged over its output filters and flattened (M += in·∏k);
    a linear weight (out, in) is averaged over its output rows (M += in), the same rule for a
    1×1 kernel. Averaging makes w invariant to permuting a layer's output units, which a thief
    can do for free, and leaves the task almost all of the layer's degrees of freedom.

    Args:
        weights: named tensors (a state dict, ONNX initializers); differentiable if they are.
        key: the key naming the layers and their shapes.
        dtype: the dtype to average in and return (default: the weights' own).

    Returns:
        (M,) tensor. Raises LayerMismatch for a missing or reshaped layer.

    A key with `host == "invariant"` uses the canonical form of `align.invariant_host` instead,
    and one with `host == "moments"` the second moments of `align.moment_host`.
    """
    if key.host == "invariant":
        return invariant_host(weights, key, dtype=dtype)
    if key.host == "moments":
        return moment_host(weights, key, dtype=dtype)
    parts = []
    for _, shape, t in host_layers(weights, key):
        rows = t.reshape(shape[0], -1)  # (out, in·∏k)
        parts.append(rows[0].to(dtype or t.dtype) if shape[0] == 1
                     else rows.mean(dim=0, dtype=dtype))  # (in·∏k,)
    return parts[0] if len(parts) == 1 else torch.cat(parts)
