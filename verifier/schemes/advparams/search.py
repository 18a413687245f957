"""`advparams` encryption internals: the greedy search among the keyed candidates, then dither.

The search reads the model and the data (that is what makes the encryption work), but it only
*chooses among* keyed candidates and writes keyed low bits, so everything the test's bound
relies on stays an output of the DRBG (`material`).
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from verifier.schemes.advparams.material import (
    Layout,
    dithered,
    draw_candidates,
    draw_dither,
    eligible,
    f32_bits,
    layout_of,
    stealth_bounds,
)
from verifier.schemes.advparams.params import AdvParamsError, Data, Params


def _subset(data: Data, count: int, secret: bytes) -> Data:
    """`count` examples of `data`, chosen by the key's secret."""
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise AdvParamsError("data must be a pair (x, y) of a labelled set: inputs (N, ...) and "
                             f"int64 labels (N,), received {type(data).__name__}")
    x, y = data
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or len(x) != len(y) \
            or len(y) == 0 or y.dtype != torch.int64:
        raise AdvParamsError("data must be (x, y) tensors of equal, non-zero length with int64 "
                             "labels; pass e.g. (split.x_held, split.y_held)")
    g = torch.Generator().manual_seed(int.from_bytes(secret[:8], "big") >> 1)
    idx = torch.randperm(len(y), generator=g)[:count]
    return x[idx], y[idx]


def _loss_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        out = model(x)
    return (float(nn.functional.cross_entropy(out, y)),
            float((out.argmax(dim=1) == y).float().mean()))


def _greedy(model: nn.Module, params: Params, tensors: dict[str, nn.Parameter],
            movable: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
            loss0: float, acc0: float) -> dict[tuple[str, int], float]:
    """Move candidate weights greedily in place; return {(name, flat index): original value}.

    Each round: gradient of the cross-entropy of the still-correct examples (the ones whose
    loss is not yet saturated), then the movable candidate with the largest |gradient| moves by
    step * range in the loss-increasing direction, clipped to the float32 stealth bounds; an
    entry that reaches a bound, or whose gradient turns against its earlier moves, is frozen.
    Stops when loss > loss_multiple * loss0 and accuracy <= (1 - target_drop) * acc0, when
    max_positions entries have moved, when nothing can move, or after 20 * max_positions rounds.
    """
    lo, hi, step, frozen = {}, {}, {}, {}
    for name, p in tensors.items():
        lo[name], hi[name] = stealth_bounds(p, params.beta)
        step[name] = params.step * float(p.detach().max() - p.detach().min())
        frozen[name] = ~movable[name]  # only keyed candidates may ever move
    moved: dict[tuple[str, int], float] = {}
    direction_of: dict[tuple[str, int], float] = {}
    model.eval()
    for _ in range(params.max_positions * 20):  # a bound on rounds, whatever the model does
        model.zero_grad(set_to_none=True)
        out = model(x)
        per = nn.functional.cross_entropy(out, y, reduction="none")  # (N,)
        right = out.argmax(dim=1) == y
        loss, acc = float(per.detach().mean()), float(right.float().mean())
        if loss > params.loss_multiple * loss0 and acc <= (1 - params.target_drop) * acc0:
            break
        if len(moved) >= params.max_positions:
            break
        objective = per[right].sum() / len(y) if bool(right.any()) else per.mean()
        objective.backward()
        best: tuple[float, str, int] | None = None
        for name, p in tensors.items():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            score = g.abs().masked_fill(frozen[name], 0.0)
            score = score.masked_fill((p >= hi[name]) & (g > 0), 0.0)
            score = score.masked_fill((p <= lo[name]) & (g < 0), 0.0)
            value, where = score.flatten().max(dim=0)
            if best is None or float(value) > best[0]:
                best = (float(value), name, int(where))
        if best is None or best[0] == 0.0:
            break  # nothing can move any more
        _, name, i = best
        grad = tensors[name].grad
        assert grad is not None  # chosen for its (non-zero) gradient
        with torch.no_grad():
            flat = tensors[name].view(-1)
            old = float(flat[i])
            direction = 1.0 if float(grad.view(-1)[i]) > 0 else -1.0
            if direction_of.setdefault((name, i), direction) != direction:
                frozen[name].view(-1)[i] = True  # it overshot: stop here rather than oscillate
                continue
            # lo and hi are float32 values: a float64 between them rounds to a float32 between them
            new = min(max(old + direction * step[name], lo[name]), hi[name])
            if new in (lo[name], hi[name]):
                frozen[name].view(-1)[i] = True
            moved.setdefault((name, i), old)
            flat[i] = new
    model.zero_grad(set_to_none=True)
    return moved


@dataclass(frozen=True)
class Moves:
    """The encrypted entries found by `search`, in (tensor, flat index) order."""

    tensors: Layout  # (name, shape) of every eligible tensor, by name
    which: list[int]  # (P,) index into `tensors`
    index: list[int]  # (P,) flat (row-major) index within that tensor
    orig: list[float]  # (P,) original float32 values
    enc: list[float]  # (P,) encrypted float32 values (low dither_bits keyed)
    stats: dict[str, Any]  # loss / accuracy before and after, sample count, data digest, size


def search(model: nn.Module, params: Params, secret: bytes, data: Data
           ) -> tuple[nn.Module, Moves]:
    """Encrypt a copy of `model`: greedy moves among keyed candidates, then the keyed dither.

    Args:
        model: a trained float32 classifier (left untouched).
        params: the encryption parameters.
        secret: the key secret (picks the subset, the candidates and their dither).
        data: a labelled set (x, y); `params.samples` examples are used.

    Returns:
        (encrypted copy, the moved entries and statistics).

    Raises:
        AdvParamsError: bad data, or no float32 weights.
    """
    x, y = _subset(data, params.samples, secret)
    enc_model = copy.deepcopy(model)
    tensors = eligible(enc_model, params.include_biases)
    if not tensors:
        raise AdvParamsError("the model has no float32 weight tensors to encrypt; set "
                             "Params(include_biases=True) or convert the model with .float()")
    layout = layout_of(tensors)
    names = [n for n, _ in layout]
    cands = draw_candidates(secret, layout, params.candidates)
    dither = dict(zip(cands, draw_dither(secret, layout, len(cands), params.dither_bits),
                      strict=True))
    movable = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in tensors.items()}
    for t, i in cands:
        movable[names[t]].view(-1)[i] = True
    loss0, acc0 = _loss_acc(enc_model, x, y)
    moved = _greedy(enc_model, params, tensors, movable, x, y, loss0, acc0)
    original = dict(model.named_parameters())
    which, index, orig, enc = [], [], [], []
    with torch.no_grad():
        for (name, i), old in sorted(moved.items(), key=lambda e: (names.index(e[0][0]), e[0][1])):
            p = tensors[name]
            lo, hi = stealth_bounds(original[name], params.beta)
            new = dithered(float(p.view(-1)[i]), lo, hi, dither[(names.index(name), i)],
                           params.dither_bits)
            if new is None or f32_bits(new) == f32_bits(old):
                p.view(-1)[i] = old  # no keyed value fits, or it is the original: not encrypted
                continue
            p.view(-1)[i] = new
            which.append(names.index(name))
            index.append(i)
            orig.append(old)
            enc.append(new)
    loss1, acc1 = _loss_acc(enc_model, x, y)
    digest = hashlib.sha256(x.contiguous().to(torch.float32).numpy().tobytes()
                            + y.contiguous().numpy().tobytes()).hexdigest()
    return enc_model, Moves(layout, which, index, orig, enc,
                            {"loss_before": loss0, "loss_after": loss1, "accuracy_before": acc0,
                             "accuracy_after": acc1, "samples": len(y), "data_sha256": digest,
                             "total_parameters": sum(p.numel() for p in model.parameters())})
