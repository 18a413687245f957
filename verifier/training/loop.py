"""Watermark terms for a plain PyTorch training loop."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from verifier import forgery
from verifier.result import TestResult
from verifier.schemes import get
from verifier.suspect import Suspect


def uchida_loss(key: Any) -> Callable[[nn.Module], torch.Tensor]:
    """The uchida embedding loss λ·BCE(b, σ(X·w)) on the model's host weights: add it to the
    task loss at every step (the key must be generated from this model's parameters).

    Example:
        >>> from verifier import toy
        >>> from verifier.schemes import uchida
        >>> m = toy.MLP(); reg = uchida_loss(uchida.generate_key(uchida.Params(), 1, model=m))
        >>> reg(m).dim()
        0
    """
    module = get("uchida")
    regularizer = getattr(module, "regularizer", None)
    if regularizer is None:  # a scheme package whose __init__ holds the contract only
        regularizer = importlib.import_module(f"{module.__name__}.embed").regularizer
    return regularizer(key)  # type: ignore[no-any-return]


class TriggerMixer:
    """Append `per_batch` keyed triggers (inputs and their secret labels) to each batch.

    The triggers are drawn at random from the key's trigger set with a seeded generator;
    inputs are reshaped to the batch's trailing shape, moved to its device and dtype.

    Example:
        >>> from verifier import toy
        >>> from verifier.schemes import trigger_set as ts
        >>> s = toy.digits(); m = toy.MLP()
        >>> mix = TriggerMixer(ts.generate_key(ts.Params(n=20), 1, model=m,
        ...                                    data=(s.x_held, s.y_held)), per_batch=4)
        >>> x, y = mix(s.x_train[:8], s.y_train[:8]); x.shape[0], y.shape[0]
        (12, 12)
    """

    def __init__(self, key: Any, per_batch: int = 16, seed: int = 0) -> None:
        if per_batch < 1:
            raise ValueError(f"per_batch must be >= 1, received {per_batch}")
        self.key = key  # a trigger_set key
        self.per_batch = min(per_batch, int(key.labels.shape[0]))  # triggers added per batch
        self._g = torch.Generator().manual_seed(seed)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`per_batch` triggers and their labels: ((k, *input_shape), (k,))."""
        idx = torch.randperm(int(self.key.labels.shape[0]), generator=self._g)[:self.per_batch]
        return self.key.triggers[idx], self.key.labels[idx]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch with triggers appended: ((N + k, ...), (N + k,))."""
        tx, ty = self.sample()
        try:
            tx = tx.reshape(-1, *x.shape[1:])
        except RuntimeError:
            raise ValueError(f"the key's triggers have shape {tuple(self.key.triggers.shape[1:])}"
                             f" per input, the batch {tuple(x.shape[1:])}: generate the key "
                             "with inputs shaped like the training batches") from None
        return (torch.cat([x, tx.to(device=x.device, dtype=x.dtype)]),
                torch.cat([y, ty.to(device=y.device, dtype=y.dtype)]))

    @torch.no_grad()
    def learned(self, model: nn.Module, forward: Callable[[nn.Module, torch.Tensor],
                                                          torch.Tensor] | None = None) -> float:
        """The fraction of triggers the model predicts as their secret labels."""
        was = model.training
        model.eval()
        try:
            logits = forward(model, self.key.triggers) if forward else model(self.key.triggers)
        finally:
            model.train(was)
        return float((logits.argmax(dim=1).cpu() == self.key.labels).float().mean())


def verify(model: nn.Module, key: Any) -> TestResult:
    """Test a just-marked torch model with its key; raise ValueError if it would not attribute.

    Returns:
        The scheme's TestResult (log10 p below the registry's forgery floor).
    """
    scheme = get(_scheme_of(key))
    result: TestResult = scheme.test(Suspect.from_module(model), key)
    if result.log10_p > forgery.floor_log10_p():
        raise ValueError(f"the model does not carry the {result.scheme} mark strongly enough to "
                         f"attribute (log10 p = {result.log10_p:.1f}, needs <= "
                         f"{forgery.floor_log10_p():.1f}): train longer or raise the loss weight")
    return result


def _scheme_of(key: Any) -> str:
    from verifier import keyfile

    return keyfile.scheme_of(key.to_bytes())
