"""Removal attacks a thief can afford, applied to a copy of a stolen model.

Each returns a new model and leaves its input untouched. An attack only "succeeds" (SoK,
Lukas et al. 2022) if it removes the mark while the attacker keeps accuracy within 5 points,
so evaluations report the attacker's accuracy beside every p-value.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from verifier import toy


def finetune(model: nn.Module, split: toy.Split, epochs: int = 5, lr: float = 1e-3,
             seed: int = 1, only: tuple[str, ...] | None = None,
             fraction: float = 1.0) -> nn.Module:
    """Fine-tune a copy with a fresh Adam on (a `fraction` of) the training data.

    Args:
        only: parameter-name prefixes to train (e.g. ("fc3",) for the last layer); all if None.
    """
    m = copy.deepcopy(model)
    params = [p for n, p in m.named_parameters() if only is None or n.startswith(only)]
    n = max(1, int(len(split.y_train) * fraction))
    torch.manual_seed(seed)
    data = toy.batches(split.x_train[:n], split.y_train[:n], seed=seed, epochs=epochs)
    return toy.train(m, data, lr=lr, params=params)


def retrain_dense(model: nn.Module, split: toy.Split, epochs: int = 20, seed: int = 1,
                  lr: float = 3e-3) -> nn.Module:
    """Re-initialize every nn.Linear of a copy and retrain only those (the ROWBACK threat)."""
    m = copy.deepcopy(model)
    torch.manual_seed(seed)
    dense = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    for mod in dense:
        mod.reset_parameters()
    params = [p for mod in dense for p in mod.parameters()]
    data = toy.batches(split.x_train, split.y_train, seed=seed, epochs=epochs)
    return toy.train(m, data, lr=lr, params=params)


@torch.no_grad()
def prune_global(model: nn.Module, fraction: float = 0.5) -> nn.Module:
    """Zero the `fraction` of weights (tensors with dim > 1) with the smallest magnitude."""
    m = copy.deepcopy(model)
    weights = [p for p in m.parameters() if p.dim() > 1]
    mags = torch.cat([p.abs().flatten() for p in weights])
    k = int(fraction * mags.numel())
    if k == 0:
        return m
    threshold = mags.kthvalue(k).values
    for p in weights:
        p.mul_((p.abs() > threshold).to(p.dtype))
    return m


@torch.no_grad()
def quantize_int8(model: nn.Module) -> nn.Module:
    """Round-trip every float tensor through symmetric per-tensor int8 (as a quantized export would)."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        scale = p.abs().max().clamp_min(1e-12) / 127.0
        p.copy_((p / scale).round().clamp(-127, 127) * scale)
    return m
