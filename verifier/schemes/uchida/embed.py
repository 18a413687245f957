"""`uchida` embedding: the regularizer λ·BCE(b, σ(X·w)) and a fine-tuning loop that adds it.

Example:
    >>> from verifier.toy import MLP
    >>> from verifier.schemes.uchida.key import Params, generate_key
    >>> m = MLP(); regularizer(generate_key(Params(), seed=1, model=m))(m).dim()
    0
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from verifier.schemes.uchida.host import host_vector
from verifier.schemes.uchida.key import Key, UchidaError
from verifier.schemes.uchida.projection import apply, factors


def regularizer(key: Key) -> Callable[[nn.Module], torch.Tensor]:
    """The embedding loss λ·BCE(b, σ(X·w)) as a callable on the model, for any training loop.

    Add it to the task loss (e.g. `trigger_set.embed(..., extra_loss=regularizer(key))` marks
    both schemes in one run). X is built once and kept by the callable.
    """
    target = torch.tensor(key.bits, dtype=torch.float32)  # (T,)
    u, v = (t.to(torch.float32) for t in factors(key.seed, len(key.bits), key.host_size))

    def loss(model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        w = host_vector(params, key)  # (M,)
        y = apply(w, u, v, len(key.bits))  # (T,)
        return key.lam * nn.functional.binary_cross_entropy_with_logits(y, target)

    return loss


def embed(model: nn.Module, key: Key, data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
          *, epochs: int = 10, lr: float = 1e-3,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None) -> nn.Module:
    """Fine-tune `model` in place on task cross-entropy + λ·BCE(b, σ(X·w)).

    Args:
        model: the model to mark (its parameters must hold the key's layers).
        key: from `generate_key`.
        data: (inputs, labels) batches; a one-shot iterator is materialised once and
            replayed each epoch, a DataLoader is iterated afresh each epoch.
        epochs: passes over `data`.
        lr: Adam learning rate (a fresh optimizer over all parameters).
        extra_loss: another loss on the model to add (e.g. a second scheme's regularizer).

    Returns:
        The same model, marked, in eval mode. Raises UchidaError without data, LayerMismatch
        when the model lacks a key layer.

    Example:
        >>> from verifier import Suspect, toy
        >>> from verifier.schemes.uchida import Params, generate_key, test
        >>> s = toy.digits(); m = toy.MLP(); k = generate_key(Params(bits=64), seed=1, model=m)
        >>> m = embed(m, k, toy.batches(s.x_train, s.y_train, epochs=3), epochs=1, lr=3e-3)
        >>> test(Suspect.from_module(m), k).p_value < 1e-9
        True
    """
    if data is None:
        raise UchidaError("uchida trains its bits in: pass data=<(inputs, labels) batches>")
    host_vector(dict(model.named_parameters()), key)  # fail early on a layer mismatch
    batches = _replayable(data)
    reg = regularizer(key)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for xb, yb in batches:
            loss = nn.functional.cross_entropy(model(xb), yb) + reg(model)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def _replayable(data: Iterable[Any]) -> Iterable[Any]:
    """`data` itself if it can be iterated again (a DataLoader, a list), else a list of it."""
    return list(data) if iter(data) is data else data
