"""`seal` alignment of a merged suspect to its base: undo hidden-unit permutation and rescaling.

A merged suspect is W_s = W_base + ΔW per target, and ΔŴ = W_s − W_base is what the bits live
in. A thief who permutes the hidden units of a ReLU network and rescales each one (rows of a
layer and its bias × c > 0, the next layer's columns × 1/c) keeps every output, and turns
W_s − W_base into noise. We undo both, target by target, in the key's order:

1. Columns: when a target's inputs are the previous target's outputs (in == previous out), the
   previous target's recovered permutation and scales are applied to its columns.
2. Rows: each suspect row goes to the base row it is most similar to (cosine; ΔW is small next
   to W_base, so the match is clear), greedily in order of similarity, one to one.
3. Scales: ΔW = s·B·C·A has rank ≤ r, so the right row scales a_i make R = diag(a)·W_s − W_base
   (rank ≤ r). Starting from a_i = ‖w_base,i‖ / ‖w_s,i‖, we alternate: P = the top-r right
   singular subspace of R; a_i = argmin_a ‖(I − P)(a·w_s,i − w_base,i)‖ (closed form). Plain
   norm ratios would remove ΔW's component along each base row, a term as large as the mark.

Everything here is a function of the suspect's weights, the base weights and the public rank r:
not of the key's bits, projections, passports or owner factors. The base is the operator's
public artifact found by digest, never a field the registrant chooses. So the aligned ΔŴ is
independent of the bits under H0 and the binomial null of `verify.test` stays exact; and no
registrant can steer the alignment (a fingerprint stored in a key could: see
`uchida.align`).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> base = torch.randn(6, 5, generator=g); delta = 0.05 * torch.randn(6, 1, generator=g) @ torch.randn(1, 5, generator=g)
    >>> perm = torch.tensor([2, 0, 1, 5, 3, 4]); c = torch.tensor([2.0, 0.5, 1.0, 3.0, 1.5, 0.7])
    >>> got = align_rows(((base + delta) * c[:, None])[perm], base, rank=1)
    >>> torch.allclose(got.weight, (base + delta).double(), atol=1e-4)
    True
    >>> got.perm.tolist() == torch.argsort(perm).tolist()   # base row i is suspect row perm[i]
    True
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

_ITERATIONS = 10  # alternations of subspace and scales (relative error ~1e-6 on a clean fit)
_FOLDS = 8  # held-out folds for the residuals of rows whose scale the bias gives
_ROUNDS = 8  # rematchings outside the fitted update's row space (a permuted copy settles in 2–4)
_KEEP_ORDER = 0.98  # mean |cosine| with the base row of the same index above this: not permuted
MIN_MATCH = 0.5  # mean |cosine| of matched rows below this: not a copy of the base's units
SURE_MATCH = 0.9  # moved only if the matched rows agree this well outside V (a permuted copy: ~1)
_PLAIN = 0.05  # unpermuted and every row/column norm within 5 % of the base's: not rescaled
MOVED = 1e-3  # |log scale| above this: the unit was rescaled (a fine-tuned copy stays below)
_EPS = 1e-12


@dataclass(frozen=True)
class Aligned:
    """A target's suspect weight in the base's unit order and scale, and how it was found."""

    weight: torch.Tensor  # (d, k) float64: the suspect's weight, rows reordered and rescaled
    perm: torch.Tensor  # (d,) long: base row i came from suspect row perm[i]
    scale: torch.Tensor  # (d,) float64: the factor each reordered row was multiplied by
    match: float  # mean |cosine| of matched rows (outside the update's row space)
    cols_moved: bool = False  # the columns were put back by the previous layer's alignment

    @property
    def moved(self) -> bool:
        """True when the suspect's units (or its inputs) were permuted or rescaled (beyond `MOVED`)."""
        identity = bool((self.perm == torch.arange(self.perm.numel())).all())
        return self.cols_moved or not identity or float(self.scale.log().abs().max()) > MOVED


def _cosines(w: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|cosine| of each suspect row with the base row of the same index, (d,)."""
    return ((w * base).sum(dim=1) / (w.norm(dim=1) * base.norm(dim=1) + _EPS)).abs()


def _assign(sim: torch.Tensor) -> torch.Tensor:
    """perm maximizing Σ_i sim[i, perm[i]] over one-to-one assignments (Hungarian method)."""
    from scipy.optimize import linear_sum_assignment  # scipy ships with scikit-learn

    _, cols = linear_sum_assignment(sim.detach().cpu().numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=1, keepdim=True) + _EPS)


def _match_rows(w: torch.Tensor, base: torch.Tensor, space: torch.Tensor | None = None,
                signed: bool = False) -> tuple[torch.Tensor, float]:
    """perm with w[perm[i]] the suspect row matched to base row i, one to one (optimal
    assignment of |cosine|), and the mean |cosine| of the matched pairs.

    `space` (q, k), orthonormal rows: compare the rows outside that subspace only (the
    update's row space, where a merged row differs from its base row). `signed`: compare by
    cosine, not |cosine| (units of a ReLU chain: a positive rescaling never flips a row).
    """
    if space is not None:
        w, base = w - (w @ space.T) @ space, base - (base @ space.T) @ space
    sim = _unit(base) @ _unit(w).T  # (d, d)
    if not signed:  # abs: in attention a sign flip of a query and its key is the same unit
        sim = sim.abs()
    perm = _assign(sim)
    return perm, float(sim[torch.arange(sim.shape[0]), perm].mean())


def _fit(w: torch.Tensor, base: torch.Tensor, rank: int, use: torch.Tensor | None = None,
         bias: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row scales a and the update's row space V (rank, k) with diag(a)·w − base ≈ rank r.

    Only the rows in `use` (all if None) shape V. With `bias`, the last column is the bias,
    which LoRA never changes: a_i starts at base_bias_i / bias_i, exact for a rescaled copy,
    and only rows with a clear bias (same sign, |base bias| ≥ 10 % of the median) shape V at
    first; without it a_i starts at the norm ratio (right when ΔW is small next to W_base).
    Returns (a, V, e) with e_i the relative residual of row i outside V:
    ‖(I − VᵀV)(a_i·w_i − base_i)‖ / ‖base_i‖, ~1e-7 for every row of a clean permuted,
    rescaled copy once the permutation is right.
    """
    a = base.norm(dim=1) / (w.norm(dim=1) + _EPS)
    rows = torch.ones(w.shape[0], dtype=torch.bool) if use is None else use
    fixed = torch.zeros(w.shape[0], dtype=torch.bool)
    if bias:
        b, bb = w[:, -1], base[:, -1]
        clear = (b * bb > 0) & (bb.abs() >= 0.1 * bb.abs().median())
        if int((rows & clear).sum()) > rank:
            # these scales are read off the bias, never refitted: a free scale per row would
            # let V absorb the base rows themselves (a_i → 0), the fit's degenerate minimum
            a = torch.where(clear, bb / torch.where(clear, b, 1.0), a)
            rows, fixed = rows & clear, clear
    v = torch.zeros(0, w.shape[1], dtype=w.dtype)
    wq, bq = w, base
    if bool(fixed.any()):
        # scales known: V from the clear rows, each row's residual from a V fitted without
        # its fold (a mismatched row cannot hide in a V it helped fit)
        e = torch.zeros(w.shape[0], dtype=w.dtype)
        fold = torch.arange(w.shape[0]) % _FOLDS
        for f in range(_FOLDS):
            _, _, vh = torch.linalg.svd((a[:, None] * w - base)[rows & (fold != f)],
                                        full_matrices=False)
            vf = vh[:rank]
            r_f = (a[:, None] * w - base)[fold == f]
            e[fold == f] = (r_f - (r_f @ vf.T) @ vf).norm(dim=1)
        _, _, vh = torch.linalg.svd((a[:, None] * w - base)[rows], full_matrices=False)
        v = vh[:rank]
        wq, bq = w - (w @ v.T) @ v, base - (base @ v.T) @ v
        a = torch.where(fixed, a, ((wq * bq).sum(dim=1) / ((wq * wq).sum(dim=1) + _EPS)).clamp_min(_EPS))
        return a, v, e / (base.norm(dim=1) + _EPS)
    v = torch.zeros(0, w.shape[1], dtype=w.dtype)
    wq, bq = w, base
    for _ in range(_ITERATIONS):
        _, _, vh = torch.linalg.svd((a[:, None] * w - base)[rows], full_matrices=False)
        v = vh[:rank]  # (r, k): the update's row space as far as the residual shows it
        wq, bq = w - (w @ v.T) @ v, base - (base @ v.T) @ v  # (I − P) applied to each row
        a = ((wq * bq).sum(dim=1) / ((wq * wq).sum(dim=1) + _EPS)).clamp_min(_EPS)
    e = (a[:, None] * wq - bq).norm(dim=1) / (base.norm(dim=1) + _EPS)
    return a, v, e


def _residual(w: torch.Tensor, base: torch.Tensor, rank: int, a: torch.Tensor) -> float:
    """How far diag(a)·w − base is from rank r: the mean relative residual of its rows outside
    the top-r row space of its better-fitting half (robust, as in `_refine`)."""
    r = a[:, None] * w - base
    v = torch.linalg.svd(r, full_matrices=False)[2][:rank]
    e = (r - (r @ v.T) @ v).norm(dim=1)
    v = torch.linalg.svd(r[e <= e.median()], full_matrices=False)[2][:rank]
    e = (r - (r @ v.T) @ v).norm(dim=1) / (base.norm(dim=1) + _EPS)
    return float(e.mean())


def _refine(w: torch.Tensor, base: torch.Tensor, rank: int, perm: torch.Tensor,
            bias: bool = False) -> tuple[torch.Tensor, float]:
    """Improve a row matching with the low-rank structure of the update; (perm, residual).

    A merged row is base row + a row of ΔW, and ΔW has rank ≤ r, so outside ΔW's row space the
    suspect's rows are exact (scaled) copies of the base's. Even when ΔW is larger than W_base
    (an adapter that carries the whole task), most rows of a first matching are right: V is
    fitted on the better-fitting half of the rows (a robust fit: mismatched rows, even two
    swapped rows that explain each other, stay out of it), and the rows are matched again
    outside V, until the matching stops changing. The residual returned is the mean relative
    residual outside V (a right matching of a clean copy: ~1e-7; a mismatched row adds ~1/d).
    """
    use: torch.Tensor | None = None
    e = torch.zeros(0)
    for _ in range(_ROUNDS):
        a, v, e = _fit(w[perm], base, rank, use, bias)
        use = e <= e.median()  # V from the better-fitting half: a robust fit
        a, v, e = _fit(w[perm], base, rank, use, bias)
        new, _ = _match_rows(w, base, v, signed=bias)
        if torch.equal(new, perm):
            break
        perm = new
    return perm, float(e.mean()) if e.numel() else 0.0


def align_rows(w: torch.Tensor, base: torch.Tensor, rank: int,
               col_perm: torch.Tensor | None = None,
               col_scale: torch.Tensor | None = None,
               bias: tuple[torch.Tensor, torch.Tensor] | None = None) -> Aligned:
    """One target's suspect weight put back in the base's unit order and scale.

    Rows are matched by an optimal one-to-one assignment of |cosine|, then refined outside the
    update's fitted row space (`_refine`), from that matching and from the suspect's own order;
    the candidate whose rows are closer to "base + rank r" wins (the suspect's own order on a
    tie, so a clean copy is never reordered). Entries the suspect holds at 0 where the base
    does not (pruned) are left out of every fit.

    Args:
        w: (d, k) the suspect's weight.
        base: (d, k) the base weight.
        rank: the key's LoRA rank r (the update has rank ≤ r).
        col_perm: (k,) the previous target's `perm`, when this target reads its outputs.
        col_scale: (k,) the previous target's `scale` (its rows were multiplied by it, so
            these columns are divided by it).
        bias: (the suspect's bias (d,), the base's bias (d,)), when both are known: a unit is
            then also described by its bias, which LoRA leaves alone, and the scales start from
            the bias ratios (see `_fit`).

    Returns:
        The aligned weight (float64) with the row permutation and row scales found.
    """
    w, base = w.double(), base.double()
    if col_perm is not None:
        w = w[:, col_perm]
    if col_scale is not None:
        w = w / col_scale[None, :]
    if bias is None:
        return _align(w, base, rank, bias=False)
    k = w.shape[1]  # the bias as one more column: it rescales with its unit's row
    got = _align(torch.cat([w, bias[0].double()[:, None]], dim=1),
                 torch.cat([base, bias[1].double()[:, None]], dim=1), rank, bias=True)
    return Aligned(weight=got.weight[:, :k], perm=got.perm, scale=got.scale, match=got.match)


def _align(w: torch.Tensor, base: torch.Tensor, rank: int, bias: bool) -> Aligned:
    """`align_rows` once the columns are in place; with `bias`, the last column is the bias."""
    d = w.shape[0]
    identity, ones = torch.arange(d), torch.ones(d, dtype=w.dtype)
    ratio = torch.cat([base.norm(dim=1) / (w.norm(dim=1) + _EPS),
                       base.norm(dim=0) / (w.norm(dim=0) + _EPS)])
    plain = float(_cosines(w, base).mean())  # the suspect's own order
    keep = ~((w == 0) & (base != 0))  # pruned entries carry no information about the units
    w0, b0 = torch.where(keep, w, 0.0), torch.where(keep, base, 0.0)
    first, _ = _match_rows(w0, b0, signed=bias)
    if float(ratio.log().abs().max()) <= _PLAIN and torch.equal(first, identity):
        return Aligned(weight=w, perm=identity, scale=ones, match=plain)  # a plain copy
    fast = torch.equal(first, identity) and plain >= _KEEP_ORDER
    if fast:
        perm = identity  # unpermuted, ΔW small next to W_base: only the scales to fit (cheap)
    else:
        perm, resid = _refine(w0, b0, rank, identity, bias)
        if not torch.equal(first, identity):
            other, other_resid = _refine(w0, b0, rank, first, bias)
            if other_resid < resid * (1 - 1e-3):
                perm, resid = other, other_resid
    a, v, e = _fit(w0[perm], b0, rank, bias=bias)
    if not fast:
        a, v, e = _fit(w0[perm], b0, rank, e <= e.median(), bias)  # robust residuals, then
        a, v, e = _fit(w0[perm], b0, rank, e <= 10 * e.median().clamp_min(1e-9), bias)  # rows that fit
    # how well the matched pairs agree outside V (1 for a copy of the base's units)
    sim = (_unit(b0 - (b0 @ v.T) @ v) * _unit(w0[perm] - (w0[perm] @ v.T) @ v)).sum(dim=1).abs()
    match = float(sim.mean())
    if match < MIN_MATCH:  # units unlike the base's are no copy of them: nothing to align
        return Aligned(weight=w, perm=identity, scale=ones, match=match)
    # the suspect's own order and scale unless the alignment makes the update clearly closer to
    # rank r: a noisy, quantized or fine-tuned copy is left alone, not "aligned" into noise
    # (and with d ≤ 2r rows, every choice fits: the outputs of a last layer, say); a copy
    # whose rows match below `SURE_MATCH` outside V (90 % of its weights pruned) is left alone too
    if 2 * rank >= d or match < SURE_MATCH or not (_residual(w0[perm], b0, rank, a)
                             < 0.5 * _residual(w0, b0, rank, ones)):
        return Aligned(weight=w, perm=identity, scale=ones, match=match)
    return Aligned(weight=a[:, None] * w[perm], perm=perm, scale=a, match=match)


def unit_match(w: torch.Tensor, base: torch.Tensor, col_perm: torch.Tensor | None = None,
               col_scale: torch.Tensor | None = None) -> float:
    """How well a suspect tensor's units match the base's: mean over base rows of the best |cosine|.

    Used to pick, among the suspect's tensors of a target's shape, the one that holds the
    target when it is not under its name (`verify`). Like `align_rows` it reads the suspect,
    the base and the previous target's recovered permutation and scales, nothing of the key.
    It is the matching score without the one-to-one constraint (an upper bound of `Aligned.match`,
    equal to it for a permuted copy), so it costs one (d, d) product, no greedy pass.

    Args:
        w: (d, k) a suspect tensor.
        base: (d, k) the base weight of the target.
        col_perm: (k,) the previous target's `perm`, when this target reads its outputs.
        col_scale: (k,) the previous target's `scale`.

    Returns:
        In [0, 1]: 1 for the base itself or a permuted, rescaled copy of it; below `MIN_MATCH`
        for tensors that are no copy of it.
    """
    w, base = w.double(), base.double()
    if col_perm is not None:
        w = w[:, col_perm]
    if col_scale is not None:
        w = w / col_scale[None, :]
    a = w / (w.norm(dim=1, keepdim=True) + _EPS)
    b = base / (base.norm(dim=1, keepdim=True) + _EPS)
    return float((b @ a.T).abs().max(dim=1).values.mean())


def _copy_rows(w: torch.Tensor, base: torch.Tensor) -> Aligned:
    """A layer the adapter does not touch: rows matched to the base's by an optimal assignment
    of |cosine| (the suspect's order kept when it is as good), scales by least squares."""
    perm, match = _match_rows(w, base, signed=True)
    identity = torch.arange(w.shape[0])
    plain = float(_cosines(w, base).mean())
    if plain >= match - 1e-9:
        perm, match = identity, plain
    w = w[perm]
    a = ((w * base).sum(dim=1) / ((w * w).sum(dim=1) + _EPS)).clamp_min(_EPS)
    return Aligned(weight=a[:, None] * w, perm=perm, scale=a, match=match)


def align_chain(suspect: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor],
                targets: Sequence[str], rank: int) -> dict[str, Aligned] | None:
    """Every target of a merged suspect aligned through the base's whole chain of layers.

    For a plain chain of Linear / Conv2d layers (an MLP, a CNN whose last conv is flattened
    into a dense layer: `toy.MLP`, `toy.CNN`), layer by layer from the input: the columns take
    the previous layer's recovered permutation and scales (in blocks of H·W inputs per channel
    across a conv → flatten → Linear boundary, in blocks of kh·kw per channel between convs);
    the rows (and bias) of a layer the adapter does not touch are matched to the base's, which
    they copy exactly; the rows of a target are aligned by `align_rows` with their bias; the
    last layer's rows are outputs, never permuted. The layers are the base's weight tensors of
    2 or 4 dimensions in state-dict order; the suspect must hold each under the same name and
    shape, and every layer must match the base's units (`MIN_MATCH`), or the result is None and
    the targets are aligned one by one. Reads the suspect and the public base only, never the
    key's bits, projections, passports or owner factors, so the bit test's null stays exact.

    Args:
        suspect: the suspect's tensors by name.
        base: every tensor of the base (`base.base_model_weights`).
        targets: the key's targets (module paths).
        rank: the key's LoRA rank r.

    Returns:
        target -> its aligned weight (2-D, float64), or None when the chain does not apply.

    Example:
        >>> from verifier import toy
        >>> from verifier.evaluation import attacks
        >>> m = toy.CNN(); stolen = attacks.rescale_units(attacks.permute_hidden(m), 4.0)
        >>> got = align_chain(stolen.state_dict(), m.state_dict(), ("fc1",), rank=4)
        >>> bool(torch.allclose(got["fc1"].weight, m.fc1.weight.double(), atol=1e-4))
        True
    """
    layers = [n[:-len(".weight")] for n, t in base.items()
              if n.endswith(".weight") and t.dim() in (2, 4)]
    if len(layers) < 2 or not set(targets) <= set(layers):
        return None
    for name in layers:
        for part in (".weight", ".bias"):
            got, want = suspect.get(name + part), base.get(name + part)
            if (got is None) != (want is None) or (
                    got is not None and want is not None and got.shape != want.shape):
                return None
    for a, b in zip(layers, layers[1:], strict=False):
        wa, wb = base[a + ".weight"], base[b + ".weight"]
        if int(wb.shape[1]) % int(wa.shape[0]) or (wa.dim() == 2 and wb.dim() == 4):
            return None
    out: dict[str, Aligned] = {}
    prev: tuple[torch.Tensor, torch.Tensor] | None = None
    for i, name in enumerate(layers):
        w, wb = suspect[name + ".weight"].double(), base[name + ".weight"].double()
        d = w.shape[0]
        if prev is not None:  # inputs: the previous layer's units, in blocks of H·W or kh·kw
            units = prev[0].numel()
            w = (w.reshape(d, units, -1)[:, prev[0], :] / prev[1][None, :, None])
        w, wb = w.reshape(d, -1), wb.reshape(d, -1)
        bias = (suspect[name + ".bias"], base[name + ".bias"]) if name + ".bias" in base else None
        if i == len(layers) - 1:  # the outputs: never permuted
            al = Aligned(weight=w, perm=torch.arange(d), scale=torch.ones(d, dtype=w.dtype),
                         match=1.0)
        elif name in targets:
            al = align_rows(w, wb, rank, bias=bias)
        elif bias is not None:
            full = _copy_rows(torch.cat([w, bias[0].double()[:, None]], dim=1),
                              torch.cat([wb, bias[1].double()[:, None]], dim=1))
            al = replace(full, weight=full.weight[:, :-1])
        else:
            al = _copy_rows(w, wb)
        if al.match < MIN_MATCH:
            return None
        rows_moved = not bool((al.perm == torch.arange(d)).all()) or \
            float(al.scale.log().abs().max()) > MOVED
        if not rows_moved:  # exactly the suspect's own order and scale: a clean copy stays exact
            al = Aligned(weight=w, perm=torch.arange(d), scale=torch.ones(d, dtype=w.dtype),
                         match=al.match)
        al = replace(al, cols_moved=prev is not None)
        prev = (al.perm, al.scale) if rows_moved else None
        if name in targets:
            out[name] = al
    return out
