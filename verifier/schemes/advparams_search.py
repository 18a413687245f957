"""`advparams` encryption internals: the greedy weight search and the keyed dither.

`verifier.schemes.advparams.encrypt` calls `search` and wraps its result in a Key; the scheme
contract (Params, Key, encrypt, embed, decrypt, test) and its docs live in that module, which
re-exports `AdvParamsError` from here (defined here so that both modules can raise it without
an import cycle).
"""
from __future__ import annotations

import copy
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from verifier.schemes._keyed import drbg_u64

if TYPE_CHECKING:
    from verifier.schemes.advparams import Params

Weights = Mapping[str, torch.Tensor]
Data = tuple[torch.Tensor, torch.Tensor]


class AdvParamsError(ValueError):
    """Models, data or keys the scheme cannot use (the message says what and the fix)."""


def _f32_bits(value: float) -> int:
    """The float32 bit pattern of a value, as an unsigned int."""
    return struct.unpack("<I", struct.pack("<f", value))[0]


def _f32_value(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


# --------------------------------------------------------------------------- encryption

def _eligible(model: nn.Module, include_biases: bool) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters()
            if p.dtype == torch.float32 and p.numel() > 1 and (p.dim() >= 2 or include_biases)}


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


def _bounds(t: torch.Tensor, beta: float) -> tuple[float, float]:
    """The stealth bounds of a tensor: [min + beta*range, max - beta*range]."""
    vmin, vmax = float(t.detach().min()), float(t.detach().max())
    return vmin + beta * (vmax - vmin), vmax - beta * (vmax - vmin)


def _greedy(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
            loss0: float, acc0: float) -> dict[tuple[str, int], float]:
    """Move weights greedily in place; return {(name, flat index): original value}.

    Each round: gradient of the cross-entropy of the still-correct examples (the ones whose
    loss is not yet saturated), then the movable entry with the largest |gradient| moves by
    step * range in the loss-increasing direction, clipped to the stealth bounds; an entry
    that reaches a bound, or whose gradient turns against its earlier moves, is frozen. Stops
    when loss > loss_multiple * loss0 and accuracy <= (1 - target_drop) * acc0, when
    max_positions entries have moved, when nothing can move, or after 20 * max_positions rounds.
    """
    tensors = _eligible(model, params.include_biases)
    if not tensors:
        raise AdvParamsError("the model has no float32 weight tensors to encrypt; set "
                             "Params(include_biases=True) or convert the model with .float()")
    lo, hi, step, frozen = {}, {}, {}, {}
    for name, p in tensors.items():
        lo[name], hi[name] = _bounds(p, params.beta)
        step[name] = params.step * float(p.detach().max() - p.detach().min())
        frozen[name] = torch.zeros(p.shape, dtype=torch.bool)
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
            new = min(max(old + direction * step[name], lo[name]), hi[name])
            if new in (lo[name], hi[name]):
                frozen[name].view(-1)[i] = True
            moved.setdefault((name, i), old)
            flat[i] = new
    model.zero_grad(set_to_none=True)
    return moved


def _dither(value: float, lo: float, hi: float, r: int, bits: int) -> float:
    """`value` with its low `bits` mantissa bits set to `r`, kept inside [lo, hi]."""
    mask = (1 << bits) - 1
    b = (_f32_bits(value) & ~mask) | r
    v = _f32_value(b)
    # moving by 2**bits units of the bit pattern keeps the dither and steps inward
    if v > hi:
        b = b - (1 << bits) if v > 0 else b + (1 << bits)
    elif v < lo:
        b = b + (1 << bits) if v < 0 else b - (1 << bits)
    return _f32_value(b)


@dataclass(frozen=True)
class _Moves:
    """The encrypted entries found by `search`, in (tensor name, flat index) order."""

    tensors: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape) of each tensor touched
    which: list[int]  # (P,) index into `tensors`
    index: list[int]  # (P,) flat (row-major) index within that tensor
    orig: list[float]  # (P,) original float32 values
    enc: list[float]  # (P,) encrypted float32 values (low dither_bits keyed)
    stats: dict[str, Any]  # loss / accuracy before and after, sample count, data digest, size


def search(model: nn.Module, params: Params, secret: bytes, data: Data
           ) -> tuple[nn.Module, _Moves]:
    """Encrypt a copy of `model`: greedy moves on a keyed subset of `data`, then keyed dither.

    Args:
        model: a trained float32 classifier (left untouched).
        params: the encryption parameters.
        secret: the key secret (picks the subset and the dither bits).
        data: a labelled set (x, y); `params.samples` examples are used.

    Returns:
        (encrypted copy, the moved entries and statistics).

    Raises:
        AdvParamsError: bad data, or no float32 weights.
    """
    x, y = _subset(data, params.samples, secret)
    enc_model = copy.deepcopy(model)
    loss0, acc0 = _loss_acc(enc_model, x, y)
    moved = _greedy(enc_model, params, x, y, loss0, acc0)
    tensors = _eligible(enc_model, params.include_biases)
    names = sorted({n for n, _ in moved})
    original = model.state_dict()
    stream = drbg_u64(secret, b"dither")
    which, index, orig, enc = [], [], [], []
    with torch.no_grad():
        for (name, i), old in sorted(moved.items()):
            p = tensors[name]
            lo, hi = _bounds(original[name], params.beta)
            r = next(stream) & ((1 << params.dither_bits) - 1)
            new = _dither(float(p.view(-1)[i]), lo, hi, r, params.dither_bits)
            if _f32_bits(new) == _f32_bits(old):
                p.view(-1)[i] = old  # the dither landed on the original: this entry is dropped
                continue
            p.view(-1)[i] = new
            which.append(names.index(name))
            index.append(i)
            orig.append(old)
            enc.append(new)
    loss1, acc1 = _loss_acc(enc_model, x, y)
    digest = hashlib.sha256(x.contiguous().to(torch.float32).numpy().tobytes()
                            + y.contiguous().numpy().tobytes()).hexdigest()
    return enc_model, _Moves(tuple((n, tuple(tensors[n].shape)) for n in names), which, index,
                             orig, enc,
                             {"loss_before": loss0, "loss_after": loss1, "accuracy_before": acc0,
                              "accuracy_after": acc1, "samples": len(y), "data_sha256": digest,
                              "total_parameters": sum(p.numel() for p in model.parameters())})
