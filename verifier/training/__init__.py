"""Training-time watermarks inside the owner's own training loop.

- plain PyTorch (`loop`): `uchida_loss(key)` is a loss term to add to the task loss, and
  `TriggerMixer(key)` appends keyed trigger inputs and labels to each batch;
- Hugging Face `transformers` (`hf`): `HallmarkCallback`, a TrainerCallback that takes one
  extra optimizer step on the watermark losses after each of the Trainer's steps.

- SEAL (`passports`): `seal_model(base, key)` wraps the base with the key's passport layers
  (LoRA; released as a PEFT adapter with `seal.release`), `SealBits(key)` is the bit hinge to
  add to the loss; the callback takes `seal=key` and alternates the passports itself.

Both give the basic mark of each scheme in the owner's run. The schemes' own `embed` functions
add what a bespoke loop can afford: `trigger_set.embed` trains the triggers in layer by layer
(more robust to fine-tuning, as docs/quality.md measures) and `seal.embed` runs the whole SEAL
training loop for owners without one. Check the result with the scheme's `test` before
registering: `verify(model, key)` below does so against the forgery floor.

Example:
    >>> from verifier.training import TriggerMixer, uchida_loss  # doctest: +SKIP
    >>> reg, mix = uchida_loss(ukey), TriggerMixer(tkey)  # doctest: +SKIP
    >>> for x, y in loader:  # doctest: +SKIP
    ...     x, y = mix(x, y)
    ...     loss = F.cross_entropy(model(x), y) + reg(model)
"""
from verifier.training.loop import TriggerMixer, uchida_loss, verify
from verifier.training.passports import SealBits, seal_model

__all__ = ["SealBits", "TriggerMixer", "seal_model", "uchida_loss", "verify"]
