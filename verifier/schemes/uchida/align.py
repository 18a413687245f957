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

Conv layers are the same rule per channel: a kernel (out, in, *k) is `out` units over `in`
input channels of ∏k values each, and a thief's permutation and positive rescaling of a conv
layer's output channels (with the next layer's input channels, including a Linear layer
reading the flattened feature map channel by channel) act on those channels exactly as on
Linear units; ReLU and max-pooling commute with both. So a chain conv → … → conv → Linear → …
has a canonical form too (`invariant_host`), and so does a transformer's MLP block
(intermediate → output: permuting its hidden units is free whatever the activation) or its
value → attention-output pair (attention is linear in the values, so whole heads, and the
value dimensions within them, may be permuted and rescaled).

Dummy units (Yan et al., USENIX Security 2023: zero-outgoing units, NeuronSplit, NeuronClique)
change no output either; the canonical form takes them out before anything is averaged
(`_canonical_units`: units with proportional incoming weights merged, units whose outgoing
weights vanish or cancel dropped), so hidden layers may be wider than the key's. With
`Params(host="moments")` the host is the second moments of the canonical unit descriptors
instead (`moment_host`): the same invariances, and a host much larger than the bits.

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

import collections
import functools
import hashlib
import math
import threading
from collections.abc import Mapping

import torch

from verifier.schemes._layout import bias_name
from verifier.schemes.uchida.key import Key, LayerMismatch, host_layers

_FEATURE_SEED = 0x68616C6C6D61726B  # public: the random features are the same for everyone
_FEATURE_SCALE = 2.0  # σ of G on unit-norm descriptors: ~2 radians of spread per feature
_EPS = 1e-12


@functools.lru_cache(maxsize=16)
def _feature_map(dim: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """G (dim, k) and β (k,) in float64: public, a function of (dim, k) alone, so cached."""
    g = torch.Generator().manual_seed(_FEATURE_SEED + 1000 * dim + k)
    proj = torch.randn(dim, k, generator=g, dtype=torch.float64)  # (dim, k)
    phase = 2 * math.pi * torch.rand(k, generator=g, dtype=torch.float64)  # (k,)
    return proj, phase


_RECENT: collections.OrderedDict[tuple[object, ...], torch.Tensor] = collections.OrderedDict()
_RECENT_SIZE = 4  # φ of the last few descriptors: the host search reuses a layer across placements
_RECENT_LOCK = threading.Lock()


def _features(d: torch.Tensor, k: int) -> torch.Tensor:
    """φ(D): (n, dim) unit descriptors -> (n, k) fixed random cosine features of their directions.

    Without gradients, φ is remembered by the descriptors' bytes for the last few calls: the host
    search (`locate`) reads the same earlier layer under many placements of the later ones.
    """
    memo = None
    if not d.requires_grad:
        digest = hashlib.blake2b(d.detach().contiguous().cpu().numpy().tobytes(), digest_size=16)
        memo = (tuple(d.shape), str(d.dtype), k, digest.hexdigest())
        with _RECENT_LOCK:
            hit = _RECENT.get(memo)
        if hit is not None:
            return hit
    proj, phase = (t.to(d.dtype) for t in _feature_map(d.shape[1], k))
    unit = d / (d.norm(dim=1, keepdim=True) + _EPS)
    phi = torch.cos(_FEATURE_SCALE * unit @ proj + phase) * math.sqrt(2.0 / k)  # (n, k)
    if memo is not None:
        with _RECENT_LOCK:
            _RECENT[memo] = phi
            while len(_RECENT) > _RECENT_SIZE:
                _RECENT.popitem(last=False)
    return phi


def invariant_host(weights: Mapping[str, torch.Tensor], key: Key,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """The host vector of the canonical form of the key's chain of layers, (M,).

    A layer's weight is read as (out, C, s): C input channels of s values each. For a Linear
    layer after a Linear layer (or first in the chain) s = 1; for a conv kernel
    (out, in, *k) s = ∏k; for a Linear layer after a conv layer (the conv output flattened,
    channel-major as `x.flatten(1)` does) s = in / C_prev. Channel c's previous scale n_{l-1}[c]
    multiplies its s columns, and its descriptor's features φ(D_{l-1})[c] replace the channel
    index: host_l = mean_i Ŵ_l[i] contracted over C with φ, (K, s) flattened. With s = 1
    this is the Linear-chain rule above, unchanged.

    Before that, dummy units are taken out (`_canonical_units`): units whose outgoing weights
    vanish are dropped and units with proportional incoming weights merged, so the canonical
    form of a model widened by function-preserving dummy neurons is the original's. The
    suspect's hidden layers may therefore have other unit counts than the key's
    (`key.chain_mismatch`); K, the number of random features of a layer's inputs, is the key's
    unit count of the previous layer (public), so M does not depend on the suspect's widths.

    Args:
        weights: named tensors (state dict); biases `<layer>.bias` are used when present.
        key: a key with `host == "invariant"` whose layers form a chain (see `key._check_host`).
        dtype: the dtype to compute in (default: the weights' own); differentiable.

    Returns:
        (M,) with M = Σ_l host_len(shape_l), the same size as the plain host vector. Raises
        LayerMismatch for a missing layer, a chain of incompatible shapes, or a layer whose
        units all vanish.
    """
    segments, _ = _walk(_chain(weights, key, dtype), key, descriptors=False)
    return segments[0] if len(segments) == 1 else torch.cat(segments)


_MOMENT_SCALE = 10.0  # entries of a mean of u·uᵀ are ~1/d: × 10 puts X·w where the BCE works


def moment_host(weights: Mapping[str, torch.Tensor], key: Key,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """The host vector of `Params(host="moments")`: second moments of the canonical unit
    descriptors of every layer of the chain but the last, (M,).

    For layer l < L with canonical unit descriptors D_l (n_l, d_l) (rows [Ŵ_l·φ(D_{l-1}), b̂_l],
    in input coordinates for the first layer; see `invariant_host`), with u_i = D_l[i]/‖D_l[i]‖:

        S_l = (1/n_l) Σ_i u_i u_iᵀ   (d_l, d_l),   host = 10 · concat_l triu(S_l)

    so M = Σ_{l<L} d_l(d_l + 1)/2, d_l = fan-in_l + 1 (`key.host_size`). Like the invariant
    host it is a sum over units of normalized quantities of the canonical form (invariant to
    permutation, positive rescaling and dummy units), a function of the suspect's weights alone
    (the null stays exact), but much larger: 2145 values for the digits MLP's fc1 alone
    against 256. Why: an attacker's 256 constraints of their own key on a host of 256 values
    leave no room for the owner's (`docs/schemes-uchida-trigger-set.md`, "Overwriting"). The
    last layer is left out: its dummy units cannot be taken out (its outgoing weights are not
    in the chain), and the output layer's mean row is free for the task (softmax ignores a
    shift shared by all classes), so a thief could rewrite it at no cost.

    Args:
        weights: named tensors (state dict); biases `<layer>.bias` are used when present.
        key: a key with `host == "moments"` whose layers form a chain of >= 2 layers.
        dtype: the dtype to compute in (default: the weights' own); differentiable.

    Returns:
        (M,). Raises LayerMismatch as `invariant_host` does.

    Example:
        >>> from verifier.toy import MLP
        >>> from verifier.schemes.uchida.key import Params, generate_key
        >>> m = MLP(); k = generate_key(Params(host="moments"), seed=1, model=m)
        >>> moment_host(m.state_dict(), k).shape
        torch.Size([6898])
    """
    _, descriptors = _walk(_chain(weights, key, dtype), key, descriptors=True)
    parts = []
    for d in descriptors:
        u = d / (d.norm(dim=1, keepdim=True) + _EPS)  # (n, d)
        moment = u.T @ u / u.shape[0]  # (d, d)
        rows, cols = torch.triu_indices(moment.shape[0], moment.shape[0])
        parts.append(_MOMENT_SCALE * moment[rows, cols])  # (d(d+1)/2,)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _chain(weights: Mapping[str, torch.Tensor], key: Key,
           dtype: torch.dtype | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The key's layers read from `weights` as (w (out, C, s), b (out,)), dummy units taken out."""
    chain: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index, (name, _, w) in enumerate(host_layers(weights, key)):
        w = w.to(dtype or w.dtype)
        b = weights.get(bias_name(name))
        b = torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b.to(w.dtype).reshape(-1)
        channels = key.shapes[0][1] if index == 0 else chain[-1][0].shape[0]
        chain.append((w.reshape(w.shape[0], channels, -1), b))  # (out, C, s), (out,)
    return _canonical_units(chain, key)


def _walk(chain: list[tuple[torch.Tensor, torch.Tensor]], key: Key,
          descriptors: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(host segments of every layer, unit descriptors D_l of every layer but the last).

    With `descriptors` False the segments are all that is wanted (`invariant_host`); with True
    the last layer's segment is skipped (`moment_host` reads only the descriptors).
    """
    segments: list[torch.Tensor] = []
    found: list[torch.Tensor] = []
    scale: torch.Tensor | None = None  # n_{l-1}: the previous layer's unit norms
    descr: torch.Tensor | None = None  # D_{l-1}: the previous layer's unit descriptors
    for index, (w, b) in enumerate(chain):
        last = index == len(chain) - 1  # its descriptors feed no further layer: not computed
        if last and descriptors:
            break
        if scale is not None:
            w = w * scale[None, :, None]  # undo the previous layer's scales on this layer's inputs
        norm = torch.sqrt((w * w).sum(dim=(1, 2)) + b * b + _EPS)  # (out,)
        w_hat, b_hat = w / norm[:, None, None], b / norm  # (out, C, s), (out,)
        mean = w_hat.mean(dim=0)  # (C, s)
        if descr is None:
            segments.append(mean.reshape(-1))
            inputs = w_hat.reshape(w.shape[0], -1)  # (out, C·s): descriptors in input coordinates
        else:
            k = key.shapes[index - 1][0]  # K: the key's units in the previous layer (public)
            phi = _features(descr, k)  # (C, K)
            if w.shape[2] == 1:  # a Linear layer after a Linear layer: the original rule, as is
                segments.append(mean[:, 0] @ phi)  # (K,)
                if last:
                    break
                inputs = w_hat[:, :, 0] @ phi  # (out, K)
            else:
                segments.append(torch.einsum("cs,ck->ks", mean, phi).reshape(-1))  # (K·s,)
                if last:
                    break
                inputs = torch.einsum("ocs,ck->oks", w_hat, phi).reshape(w.shape[0], -1)  # (out, K·s)
        descr = torch.cat([inputs, b_hat[:, None]], dim=1)  # (out, dim + 1)
        found.append(descr)
        scale = norm
    return segments, found


_MERGE_TOL = 1e-4  # ‖r̂_i − r̂_j‖ at most this: units i, j have the same incoming direction
_DEAD_REL = 1e-6  # outgoing contribution ≤ this × the layer's largest: a unit that does nothing
_CANCEL_REL = 1e-4  # merged units whose contributions cancel to ≤ this × their sum: a clique


def _canonical_units(chain: list[tuple[torch.Tensor, torch.Tensor]], key: Key,
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The chain with dummy units taken out: per layer (w (out, C, s), b (out,)) as given.

    For each layer l that feeds another layer of the chain (its outgoing weights are the next
    layer's inputs), in order from the input:

    1. Units whose normalized incoming vectors r̂ = (w_i, b_i)/‖(w_i, b_i)‖ coincide
       (‖r̂_i − r̂_j‖ ≤ _MERGE_TOL, transitively) are one unit: ReLU (and max-pooling) is
       positively homogeneous, so c_i·relu(z) + c_j·relu(z) = (c_i + c_j)·relu(z). The merged
       unit has incoming row Σ r_k (norm Σ n_k) and outgoing column Σ n_k a_k / Σ n_k, the
       same function (NeuronSplit undone).
    2. A unit (merged or not) whose outgoing contribution q = ‖Σ n_k a_k‖ is at most
       _DEAD_REL × the layer's largest q is dropped (zero-outgoing dummies), and so is a merged
       group whose contributions cancel, q ≤ _CANCEL_REL × Σ n_k ‖a_k‖ (NeuronClique).

    Why these thresholds: a float32 copy of a split unit has r̂ equal to ~1e-7 and a clique
    cancels to ~1e-7 of its members' sum, while distinct units of a trained network lie
    ≥ 0.1 apart in r̂ (measured, docs/schemes-uchida-trigger-set.md); a contribution below
    1e-6 of the layer's largest is within a few float32 ulps of the next layer's sums. Every
    decision reads the suspect's weights alone (no key bit, no registrant field), so the
    canonical form, like the rest of the host, is a fixed function of the suspect and the null
    stays exact. The last layer of the chain is left as it is (its outgoing weights are not
    in the chain). When nothing merges or drops, the tensors are returned as given, so a
    model without dummies has exactly the host it had before.

    Raises:
        LayerMismatch: every unit of a layer vanishes (the layer computes nothing).
    """
    chain = list(chain)
    changed = True
    while changed:  # each change removes a unit, so this ends; usually one or two passes
        changed = False
        for i in range(len(chain) - 1):
            changed |= _reduce_layer(chain, i, key.layers[i])
    return chain


def _reduce_layer(chain: list[tuple[torch.Tensor, torch.Tensor]], i: int, name: str) -> bool:
    """Merge and drop the units of layer i in place (`_canonical_units`); True if any changed."""
    w, b = chain[i]
    nxt, nb = chain[i + 1]
    with torch.no_grad():
        groups = _unit_groups(w.detach().double(), b.detach().double(), nxt.detach().double(), name)
    if groups is None:
        return False
    out = w.shape[0]
    member = torch.zeros(len(groups), out, dtype=w.dtype)  # (G, out): P[g, k] = 1 if k ∈ g
    for g, units in enumerate(groups):
        member[g, units] = 1.0
    rows = torch.cat([w.reshape(out, -1), b[:, None]], dim=1)  # (out, C·s + 1)
    norm = rows.norm(dim=1)  # (out,)
    merged = member @ rows  # (G, C·s + 1): parallel rows add, norm Σ n_k
    weight = torch.einsum("gk,oks->ogs", member, nxt * norm[None, :, None])  # Σ n_k a_k
    weight = weight / merged.norm(dim=1)[None, :, None]  # (out', G, s)
    chain[i] = (merged[:, :-1].reshape(len(groups), *w.shape[1:]), merged[:, -1])
    chain[i + 1] = (weight, nb)
    return True


_WINDOW = 64  # a unit is compared with at most this many successors in the sorted projection


@functools.lru_cache(maxsize=16)
def _direction(dim: int) -> torch.Tensor:
    """A fixed public unit vector of `dim` entries (float64): the sort key of `_close_pairs`."""
    g = torch.Generator().manual_seed(_FEATURE_SEED - dim)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    return v / v.norm()


def _close_pairs(unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (a, b) of rows of `unit` (n, d) with ‖unit_a − unit_b‖ ≤ _MERGE_TOL.

    Not all n² distances (1 s for a 3072-unit layer): rows are sorted by their projection p on
    a fixed public direction g (‖g‖ = 1, so |p_a − p_b| ≤ ‖unit_a − unit_b‖), and each row is
    compared with the rows after it whose p is within the tolerance, at most _WINDOW of them
    (a run of identical rows is still chained together through its neighbours).
    """
    n = unit.shape[0]
    p = unit @ _direction(unit.shape[1])  # (n,)
    order = torch.argsort(p)
    ps = p[order]
    hi = torch.searchsorted(ps, ps + _MERGE_TOL, right=True)  # (n,) first index beyond reach
    counts = (hi - torch.arange(n) - 1).clamp(0, _WINDOW)  # (n,) successors to compare with
    first = torch.repeat_interleave(torch.arange(n), counts)  # (E,)
    start = torch.cumsum(counts, 0) - counts
    second = first + 1 + torch.arange(len(first)) - torch.repeat_interleave(start, counts)
    a, b = order[first], order[second]
    near = (unit[a] - unit[b]).norm(dim=1) <= _MERGE_TOL
    return a[near], b[near]


def _unit_groups(w: torch.Tensor, b: torch.Tensor, nxt: torch.Tensor,
                 name: str) -> list[list[int]] | None:
    """The kept units of one layer as groups of unit indices, or None when every unit is kept
    alone (see `_canonical_units`). w (out, C, s), b (out,), nxt (out', out, s') in float64."""
    out = w.shape[0]
    rows = torch.cat([w.reshape(out, -1), b[:, None]], dim=1)  # (out, d)
    norm = rows.norm(dim=1)  # (out,)
    unit = rows / norm.clamp_min(1e-300)[:, None]  # zero rows stay zero
    a, b = _close_pairs(unit)
    label = torch.arange(out)
    while a.numel():  # connected components: every unit takes the smallest label of its neighbours
        nxt_label = label.clone()
        nxt_label.scatter_reduce_(0, a, label[b], reduce="amin")
        nxt_label.scatter_reduce_(0, b, label[a], reduce="amin")
        nxt_label = nxt_label[nxt_label]
        if torch.equal(nxt_label, label):
            break
        label = nxt_label
    ids = torch.unique(label, return_inverse=True)[1]  # (out,) group of each unit, 0 … G-1
    size = torch.bincount(ids)  # (G,)
    contrib = nxt * norm[None, :, None]  # (out', out, s'): n_k a_k
    summed = torch.zeros(nxt.shape[0], len(size), nxt.shape[2], dtype=nxt.dtype)
    q = summed.index_add_(1, ids, contrib).norm(dim=(0, 2))  # (G,) ‖Σ_k n_k a_k‖
    mass = torch.zeros(len(size), dtype=nxt.dtype).index_add_(0, ids, contrib.norm(dim=(0, 2)))
    largest = float(q.max())
    if largest == 0.0:
        raise LayerMismatch(f"every unit of layer `{name}` has zero outgoing weight: the layer "
                            "computes nothing, so it carries no host")
    keep = (q > _DEAD_REL * largest) & ((size == 1) | (q > _CANCEL_REL * mass))  # (G,)
    if len(size) == out and bool(keep.all()):
        return None
    return [torch.nonzero(ids == g).flatten().tolist() for g in torch.nonzero(keep).flatten().tolist()]
