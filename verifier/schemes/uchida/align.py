"""`uchida` invariant host: the host vector of a canonical form that free rewrites cannot change.

A thief can permute the hidden units of a ReLU network and rescale each unit (incoming weights
and bias × c > 0, outgoing weights × 1/c) without changing a single output (Yan et al.,
KDD 2022). The plain host vector (`host.host_vector`) survives permutations of a layer's own
outputs but not of its inputs, nor any rescaling. With `Params(host="invariant")` the host is
computed on a canonical form instead, layer by layer along a chain of Linear layers:

    Ŵ_l = W_l·diag(n_{l-1}) / n_l,  b̂_l = b_l / n_l,  n_l[i] = ‖(W_l[i,:]·n_{l-1}, b_l[i])‖
    D_1 = [Ŵ_1, b̂_1]                                  (units described in input coordinates)
    D_l = [Ŵ_l·φ(D_{l-1}), b̂_l]                       (units described by their inputs' features)
    host_1 = mean_i Ŵ_1[i,:],  host_l = (mean_i Ŵ_l[i,:])·φ(D_{l-1})

φ(d) = cos(G·d/‖d‖ + β) are fixed public random features (K = the layer's fan-in). Every
quantity is a sum over units (permutation-invariant), of normalized weights (scale-invariant)
and a smooth function of the weights (so fine-tuning moves it little).

Why not align the suspect's units to a per-unit fingerprint stored in the key: the fingerprint
would be a field the registrant chooses, and the alignment it steers is a free choice of
permutation and scales of a victim's units. Measured on a digits MLP with an honest, seed-derived
key: steering only the scales (as an alignment that undoes rescaling from stored norms would)
raised a victim's matches from 151 to 226 of 256 (log10 p −2.6 → −37.9, 126 bits, above the
80-bit floor); steering the unit order alone reached 199 (−19.2). The canonical form above has no
free field: it is a function of the suspect's weights alone, so the null stays exact (the bits
are fair coins independent of the suspect and of X) and no key can steer it.

Example:
    >>> from verifier.toy import MLP
    >>> from verifier.schemes.uchida.key import Params, generate_key
    >>> m = MLP(); k = generate_key(Params(host="invariant"), seed=1, model=m)
    >>> invariant_host(m.state_dict(), k).shape
    torch.Size([256])
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from verifier.schemes.uchida.key import Key, host_layers

_FEATURE_SEED = 0x68616C6C6D61726B  # public: the random features are the same for everyone
_FEATURE_SCALE = 2.0  # σ of G on unit-norm descriptors: ~2 radians of spread per feature
_EPS = 1e-12


def bias_name(weight_name: str) -> str:
    """The bias that goes with a weight: `fc1.weight` -> `fc1.bias`."""
    return weight_name[: -len("weight")] + "bias" if weight_name.endswith("weight") else weight_name + ".bias"


def _features(d: torch.Tensor, k: int) -> torch.Tensor:
    """φ(D): (n, dim) unit descriptors -> (n, k) fixed random cosine features of their directions."""
    g = torch.Generator().manual_seed(_FEATURE_SEED + 1000 * d.shape[1] + k)
    proj = torch.randn(d.shape[1], k, generator=g, dtype=torch.float64).to(d.dtype)  # (dim, k)
    phase = (2 * math.pi * torch.rand(k, generator=g, dtype=torch.float64)).to(d.dtype)  # (k,)
    unit = d / (d.norm(dim=1, keepdim=True) + _EPS)
    return torch.cos(_FEATURE_SCALE * unit @ proj + phase) * math.sqrt(2.0 / k)  # (n, k)


def invariant_host(weights: Mapping[str, torch.Tensor], key: Key,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """The host vector of the canonical form of the key's chain of Linear layers, (M,).

    Args:
        weights: named tensors (state dict); biases `<layer>.bias` are used when present.
        key: a key with `host == "invariant"` whose layers form a chain (out_l == in_{l+1}).
        dtype: the dtype to compute in (default: the weights' own); differentiable.

    Returns:
        (M,) with M = Σ_l in_l, the same size as the plain host vector. Raises LayerMismatch
        for a missing or reshaped layer.
    """
    out = []
    scale: torch.Tensor | None = None  # n_{l-1}: the previous layer's row norms
    descr: torch.Tensor | None = None  # D_{l-1}: the previous layer's unit descriptors
    for name, shape, w in host_layers(weights, key):
        w = w.to(dtype or w.dtype)  # (out, in)
        b = weights.get(bias_name(name))
        b = torch.zeros(shape[0], dtype=w.dtype) if b is None else b.to(w.dtype).reshape(-1)
        if scale is not None:
            w = w * scale[None, :]  # undo the previous layer's scales on this layer's inputs
        norm = torch.sqrt((w * w).sum(dim=1) + b * b + _EPS)  # (out,)
        w_hat, b_hat = w / norm[:, None], b / norm  # (out, in), (out,)
        mean = w_hat.mean(dim=0)  # (in,)
        if descr is None:
            out.append(mean)
            inputs = w_hat  # (out, in): descriptors in input coordinates
        else:
            phi = _features(descr, shape[1])  # (in, K = in)
            out.append(mean @ phi)  # (K,)
            inputs = w_hat @ phi  # (out, K)
        descr = torch.cat([inputs, b_hat[:, None]], dim=1)  # (out, dim + 1)
        scale = norm
    return out[0] if len(out) == 1 else torch.cat(out)
