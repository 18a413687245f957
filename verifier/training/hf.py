"""`HallmarkCallback`: training-time watermarks in a Hugging Face `transformers` Trainer.

A TrainerCallback cannot change the Trainer's loss, so the mark is trained by alternation:
after each optimizer step of the Trainer (`on_step_end`, gradients already cleared), the
callback computes the watermark losses — the uchida regularizer on the host weights, and the
cross-entropy of a few keyed triggers — backpropagates them and takes one more step with the
Trainer's own optimizer. With Adam-type optimizers this writes the mark at the task's pace.

Example:
    >>> trainer = Trainer(model=model, args=args, train_dataset=ds,  # doctest: +SKIP
    ...                   callbacks=[HallmarkCallback(uchida=ukey, trigger_set=tkey)])
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from verifier.training.loop import TriggerMixer, uchida_loss

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output: a tensor, a dict/ModelOutput with "logits", or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits") and output.logits is not None:
        return output.logits  # type: ignore[no-any-return]
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]  # type: ignore[no-any-return]
    if isinstance(output, tuple | list):
        return output[-1] if len(output) > 1 else output[0]  # type: ignore[no-any-return]
    raise TypeError(f"cannot find logits in a {type(output).__name__}; pass forward=")


class HallmarkCallback(TrainerCallback):  # type: ignore[misc]
    """One extra optimizer step per Trainer step on the watermark losses.

    Args:
        uchida: an uchida key generated from this model's parameters (or None).
        trigger_set: a trigger_set key (or None).
        triggers_per_step: triggers in each extra step.
        forward: how to get logits for a batch of trigger inputs, default
            `logits_of(model(x))`; pass e.g. `lambda m, x: m(pixel_values=x).logits`.
        seed: seeds the draw of triggers.
    """

    def __init__(self, uchida: Any = None, trigger_set: Any = None, *,
                 triggers_per_step: int = 16, forward: Forward | None = None,
                 seed: int = 0) -> None:
        if uchida is None and trigger_set is None:
            raise ValueError("HallmarkCallback needs an uchida key, a trigger_set key, or both")
        self.regularizer = uchida_loss(uchida) if uchida is not None else None
        self.mixer = (TriggerMixer(trigger_set, triggers_per_step, seed)
                      if trigger_set is not None else None)
        self.forward: Forward = forward or (lambda m, x: logits_of(m(x)))
        self.steps = 0  # extra steps taken

    def loss(self, model: nn.Module) -> torch.Tensor:
        """The watermark losses on the model as it is now (a scalar)."""
        total = torch.zeros((), device=next(model.parameters()).device)
        if self.regularizer is not None:
            total = total + self.regularizer(model)
        if self.mixer is not None:
            x, y = self.mixer.sample()
            device = next(model.parameters()).device
            total = total + nn.functional.cross_entropy(self.forward(model, x.to(device)),
                                                        y.to(device))
        return total

    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                    optimizer: Any = None, **kwargs: Any) -> None:
        if model is None or optimizer is None:
            raise RuntimeError("the Trainer did not pass its model and optimizer to "
                               "HallmarkCallback.on_step_end (transformers >= 4.30 does)")
        self.loss(model).backward()
        optimizer.step()
        optimizer.zero_grad()
        self.steps += 1
