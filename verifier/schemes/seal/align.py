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

from dataclasses import dataclass

import torch

_ITERATIONS = 10  # alternations of subspace and scales (relative error ~1e-6 on a clean fit)
_KEEP_ORDER = 0.98  # keep the suspect's order when it matches within 2 % of the best matching
MIN_MATCH = 0.5  # mean |cosine| of matched rows below this: not a copy of the base's units
_PLAIN = 0.05  # unpermuted and every row/column norm within 5 % of the base's: not rescaled
MOVED = 1e-3  # |log scale| above this: the unit was rescaled (a fine-tuned copy stays below)
_EPS = 1e-12


@dataclass(frozen=True)
class Aligned:
    """A target's suspect weight in the base's unit order and scale, and how it was found."""

    weight: torch.Tensor  # (d, k) float64: the suspect's weight, rows reordered and rescaled
    perm: torch.Tensor  # (d,) long: base row i came from suspect row perm[i]
    scale: torch.Tensor  # (d,) float64: the factor each reordered row was multiplied by
    match: float  # mean |cosine| of matched rows before rescaling: how well the units matched

    @property
    def moved(self) -> bool:
        """True when the suspect's units were permuted or rescaled (beyond `MOVED`)."""
        identity = bool((self.perm == torch.arange(self.perm.numel())).all())
        return not identity or float(self.scale.log().abs().max()) > MOVED


def _cosines(w: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """|cosine| of each suspect row with the base row of the same index, (d,)."""
    return ((w * base).sum(dim=1) / (w.norm(dim=1) * base.norm(dim=1) + _EPS)).abs()


def _match_rows(w: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, float]:
    """perm with w[perm[i]] the suspect row most similar to base row i, one to one, and the
    mean |cosine| of the matched pairs.

    Mutual best matches first (all of them for a permuted copy), then the rest greedily in
    order of similarity, so a (384, 384) target costs milliseconds even for an unrelated model.
    """
    a = w / (w.norm(dim=1, keepdim=True) + _EPS)
    b = base / (base.norm(dim=1, keepdim=True) + _EPS)
    sim = (b @ a.T).abs()  # (d, d); abs: a sign flip of a row would still be the same unit
    d = sim.shape[0]
    best_sus, best_base = sim.argmax(dim=1), sim.argmax(dim=0)  # (d,), (d,)
    mutual = best_base[best_sus] == torch.arange(d)
    perm = torch.where(mutual, best_sus, torch.full((d,), -1, dtype=torch.long))
    free_base = (~mutual).nonzero().flatten()
    taken = torch.zeros(d, dtype=torch.bool)
    taken[best_sus[mutual]] = True
    free_sus = (~taken).nonzero().flatten()
    if free_base.numel():
        sub = sim[free_base][:, free_sus]  # (m, m)
        m = sub.shape[0]
        used_b, used_s = [False] * m, [False] * m
        left = m
        for flat in torch.argsort(sub.flatten(), descending=True).tolist():
            i, j = divmod(flat, m)
            if not used_b[i] and not used_s[j]:
                perm[free_base[i]] = free_sus[j]
                used_b[i] = used_s[j] = True
                left -= 1
                if not left:
                    break
    return perm, float(sim[torch.arange(d), perm].mean())


def _row_scales(w: torch.Tensor, base: torch.Tensor, rank: int, a: torch.Tensor) -> torch.Tensor:
    """Per-row a minimizing the part of diag(a)·w − base outside its top-`rank` row space,
    refined from the start `a`."""
    for _ in range(_ITERATIONS):
        _, _, vh = torch.linalg.svd(a[:, None] * w - base, full_matrices=False)
        p = vh[:rank]  # (r, k): the update's row space as far as the residual shows it
        wq, bq = w - (w @ p.T) @ p, base - (base @ p.T) @ p  # (I − P) applied to each row
        a = (wq * bq).sum(dim=1) / ((wq * wq).sum(dim=1) + _EPS)
    return a.clamp_min(_EPS)  # a positive rescaling only: c > 0 keeps a ReLU's function


def _scales(w: torch.Tensor, base: torch.Tensor, rank: int, keep: torch.Tensor) -> torch.Tensor:
    """Row scales a with diag(a)·w − base of rank ≤ `rank`; entries outside `keep` ignored.

    Rows only: a target's columns are either inputs nobody can rescale for free, or the outputs
    of the previous target, whose recovered scales are applied to them first (`col_scale`).
    """
    w0, b0 = torch.where(keep, w, 0.0), torch.where(keep, base, 0.0)
    start = b0.norm(dim=1) / (w0.norm(dim=1) + _EPS)  # (d,) norm ratios
    return _row_scales(w0, b0, rank, start)


def align_rows(w: torch.Tensor, base: torch.Tensor, rank: int,
               col_perm: torch.Tensor | None = None,
               col_scale: torch.Tensor | None = None) -> Aligned:
    """One target's suspect weight put back in the base's unit order and scale.

    Args:
        w: (d, k) the suspect's weight.
        base: (d, k) the base weight.
        rank: the key's LoRA rank r (the update has rank ≤ r).
        col_perm: (k,) the previous target's `perm`, when this target reads its outputs.
        col_scale: (k,) the previous target's `scale` (its rows were multiplied by it, so
            these columns are divided by it).

    Returns:
        The aligned weight (float64) with the row permutation and row scales found.
    """
    w, base = w.double(), base.double()
    if col_perm is not None:
        w = w[:, col_perm]
    if col_scale is not None:
        w = w / col_scale[None, :]
    perm, match = _match_rows(w, base)
    plain = float(_cosines(w, base).mean())  # the suspect's own order
    identity, ones = torch.arange(w.shape[0]), torch.ones(w.shape[0], dtype=w.dtype)
    if match < MIN_MATCH:  # units unlike the base's are no copy of them: nothing to align
        return Aligned(weight=w, perm=identity, scale=ones, match=plain)
    if plain >= _KEEP_ORDER * match:  # not permuted: near-ties must not reorder a clean copy
        perm, match = identity, plain
    w = w[perm]
    ratio = torch.cat([base.norm(dim=1) / (w.norm(dim=1) + _EPS),
                       base.norm(dim=0) / (w.norm(dim=0) + _EPS)])
    if bool((perm == torch.arange(perm.numel())).all()) and float(ratio.log().abs().max()) <= _PLAIN:
        return Aligned(weight=w, perm=perm, scale=ones, match=match)
    keep = ~((w == 0) & (base != 0))  # pruned entries carry no information about the scale
    a = _scales(w, base, rank, keep)
    return Aligned(weight=a[:, None] * w, perm=perm, scale=a, match=match)


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
