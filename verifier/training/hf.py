"""`HallmarkCallback`: training-time watermarks in a Hugging Face `transformers` Trainer.

A TrainerCallback cannot change the Trainer's loss, so the mark is trained by alternation:
after each optimizer step of the Trainer (`on_step_end`, gradients already cleared), the
callback computes the watermark losses — the uchida regularizer on the host weights, the
cross-entropy of a few keyed triggers, the SEAL bit hinge — backpropagates them and takes one
more step with the Trainer's own optimizer. With Adam-type optimizers this writes the mark at
the task's pace.

SEAL (LoRA, released as a PEFT adapter) needs its passport layers in the model the Trainer
trains: wrap the base first with `verifier.training.seal_model(base, key)` (it freezes all but
the adapter and the `trainable` modules). The callback then alternates the passports C and C_p
step by step (`on_step_begin`), as SEAL does, adds the bit hinge after `seal_warmup` of the
steps, and leaves passport C active at the end; release with `seal.finalize_key` and
`seal.release` as after `seal.embed`.

Example:
    >>> trainer = Trainer(model=model, args=args, train_dataset=ds,  # doctest: +SKIP
    ...                   callbacks=[HallmarkCallback(uchida=ukey, trigger_set=tkey)])
    >>> model = seal_model(base, skey, trainable=("classifier",))  # doctest: +SKIP
    >>> Trainer(model=model, args=args, train_dataset=ds,  # doctest: +SKIP
    ...         callbacks=[HallmarkCallback(seal=skey)]).train()
    >>> seal.release(model, seal.finalize_key(model, skey), "adapter/")  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from verifier.schemes import seal as seal_scheme
from verifier.training.loop import TriggerMixer, uchida_loss
from verifier.training.passports import SealBits, check_wrapped

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
        seal: a SEAL key; the Trainer's model must come from `seal_model(base, key)` (or None).
        triggers_per_step: triggers in each extra step.
        forward: how to get logits for a batch of trigger inputs, default
            `logits_of(model(x))`; pass e.g. `lambda m, x: m(pixel_values=x).logits`.
        seed: seeds the draw of triggers.
        seal_warmup: the fraction of the Trainer's steps before the SEAL bit hinge starts
            (the released update is zero at first, and its normalized projections undefined).

    Raises:
        ValueError: no key given, or seal_warmup outside [0, 1).
    """

    def __init__(self, uchida: Any = None, trigger_set: Any = None, seal: Any = None, *,
                 triggers_per_step: int = 16, forward: Forward | None = None,
                 seed: int = 0, seal_warmup: float = 0.25) -> None:
        if uchida is None and trigger_set is None and seal is None:
            raise ValueError("HallmarkCallback needs an uchida, trigger_set or seal key (or "
                             "several)")
        if not 0.0 <= seal_warmup < 1.0:
            raise ValueError(f"seal_warmup is a fraction of the steps in [0, 1), received "
                             f"{seal_warmup}")
        self.regularizer = uchida_loss(uchida) if uchida is not None else None
        self.mixer = (TriggerMixer(trigger_set, triggers_per_step, seed)
                      if trigger_set is not None else None)
        self.seal_key = seal
        self.bits = SealBits(seal) if seal is not None else None
        self.seal_warmup = seal_warmup
        self.seal_start = 0  # the first step with the bit hinge, set when training starts
        self.forward: Forward = forward or (lambda m, x: logits_of(m(x)))
        self.steps = 0  # extra steps taken

    def loss(self, model: nn.Module, step: int | None = None) -> torch.Tensor:
        """The watermark losses on the model as it is now (a scalar); `step` is the Trainer's
        step, which gates the SEAL hinge (None: always on)."""
        device = next(model.parameters()).device
        total = torch.zeros((), device=device)
        if self.regularizer is not None:
            total = total + self.regularizer(model)
        if self.mixer is not None:
            x, y = self.mixer.sample()
            total = total + nn.functional.cross_entropy(self.forward(model, x.to(device)),
                                                        y.to(device))
        if self.bits is not None and (step is None or step >= self.seal_start):
            total = total + self.bits(model).to(device)
        return total

    def on_train_begin(self, args: Any, state: Any, control: Any,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        if self.seal_key is not None:
            if model is None:
                raise RuntimeError("the Trainer did not pass its model to "
                                   "HallmarkCallback.on_train_begin")
            check_wrapped(model, self.seal_key)
            self.seal_start = int(self.seal_warmup * max(1, state.max_steps))

    def on_step_begin(self, args: Any, state: Any, control: Any,
                      model: nn.Module | None = None, **kwargs: Any) -> None:
        if self.seal_key is not None and model is not None:  # SEAL: C and C_p step by step
            passport = seal_scheme.lora.PASSPORT_P if state.global_step % 2 else \
                seal_scheme.lora.PASSPORT
            seal_scheme.lora.set_passport(model, passport)

    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                    optimizer: Any = None, **kwargs: Any) -> None:
        if model is None or optimizer is None:
            raise RuntimeError("the Trainer did not pass its model and optimizer to "
                               "HallmarkCallback.on_step_end (transformers >= 4.30 does)")
        if self.seal_key is not None:
            seal_scheme.lora.set_passport(model, seal_scheme.lora.PASSPORT)
        loss = self.loss(model, state.global_step)
        if not loss.requires_grad:  # only the SEAL hinge, still warming up
            return
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        self.steps += 1

    def on_train_end(self, args: Any, state: Any, control: Any,
                     model: nn.Module | None = None, **kwargs: Any) -> None:
        if self.seal_key is not None and model is not None:
            seal_scheme.lora.set_passport(model, seal_scheme.lora.PASSPORT)  # the released one
