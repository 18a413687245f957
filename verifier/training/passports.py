"""SEAL in the owner's own training: a base model wrapped with the key's passport layers, and
the bit hinge as a loss term.

`seal.embed` trains SEAL in its own loop. An owner with a loop of their own (or a Hugging Face
Trainer, see `hf.HallmarkCallback`) instead wraps the base once with `seal_model`, trains it,
and then releases it exactly as after `seal.embed`: `seal.finalize_key(model, key)` and
`seal.release(model, key, "adapter/")`. SEAL alternates the passports C and C_p batch by batch
(`seal.lora.set_passport`); the key's secret bits are written by `SealBits`, the same hinge as
`seal.embed`'s (weight·mean_j relu(margin − b_j·z_j) on the normalized projections of the
released update B·C·A), switched on after a warm-up because ‖B·C·A‖ = 0 when training starts.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from verifier.schemes import seal
from verifier.schemes.seal.base import target_weights


def seal_model(base: nn.Module, key: seal.Key, *, trainable: Sequence[str] = ()) -> nn.Module:
    """A copy of `base` with the key's SEAL layers, ready for an optimizer or a Trainer.

    Only the SEAL factors (and parameters under the `trainable` prefixes, e.g. a classifier
    head) keep `requires_grad`, so an optimizer built afterwards (the Trainer's) trains just
    those; the base stays frozen, as in `seal.embed`.

    Args:
        base: the model the key was generated for (left untouched).
        key: from `seal.generate_key(params, seed, model=base)`.
        trainable: parameter-name prefixes trained alongside the adapter.

    Returns:
        The wrapped copy, passport C active.

    Raises:
        SealSetupError: `base` is not the key's base model (target shapes or weights differ).

    Example:
        >>> model = seal_model(base, key, trainable=("classifier",))  # doctest: +SKIP
        >>> trainer = Trainer(model=model, args=args, train_dataset=ds,  # doctest: +SKIP
        ...                   callbacks=[HallmarkCallback(seal=key)])
    """
    weights = target_weights(base, key.targets)
    shapes = {t: tuple(w.shape) for t, w in weights.items()}
    if shapes != {t: tuple(s) for t, s in key.shapes.items()}:
        raise seal.SealSetupError(f"the model's target shapes {shapes} differ from the key's "
                                  f"{dict(key.shapes)}; generate the key from this model")
    if key.base_digest is not None and seal.weights_digest(weights) != key.base_digest:
        raise seal.SealSetupError("the model's target weights are not the key's base; wrap the "
                                  "same base model the key was generated for")
    model = copy.deepcopy(base)
    seal.lora.wrap(model, key.targets, key.r, key.alpha, key.passports, seed=key.seed)
    factors = {f"{t}.seal_{w}" for t in key.targets for w in "AB"}
    prefixes = tuple(trainable)
    for name, p in model.named_parameters():
        p.requires_grad_(name in factors or (bool(prefixes) and name.startswith(prefixes)))
    return model


def check_wrapped(model: nn.Module, key: seal.Key) -> None:
    """Raise SealSetupError unless `model` has the key's SEAL layers (from `seal_model`)."""
    layers = seal.lora.seal_layers(model)
    for t in key.targets:
        c, c_p = key.passports[t]
        if t not in layers or not (torch.equal(layers[t].passport, c.float())
                                   and torch.equal(layers[t].passport_p, c_p.float())):
            raise seal.SealSetupError(f"target `{t}` of the SEAL key is not a SEAL layer with "
                                      "the key's passports; train the model returned by "
                                      "verifier.training.seal_model(base, key)")


class SealBits:
    """The SEAL key's bit hinge on the released update, as a loss term (a scalar tensor).

    Args:
        key: the SEAL key the model was wrapped with.

    Example:
        >>> bits = SealBits(key)  # doctest: +SKIP
        >>> loss = task_loss + bits(model)  # doctest: +SKIP
    """

    def __init__(self, key: seal.Key) -> None:
        self.key = key
        self.signs = seal.secret_bits(key.seed, key.bits)  # (T,) in {±1}
        self.proj = {t: seal.projections(key.seed, t, key.bits, key.shapes[t])
                     for t in key.targets}  # per target: u (T, d), v (T, k)

    def z(self, model: nn.Module) -> torch.Tensor:
        """Normalized projections uᵀ·ΔW·v / ‖ΔW‖ of the released update ΔW = B·C·A, (T,)."""
        layers = seal.lora.seal_layers(model)
        total = torch.zeros(self.key.bits)
        energy = torch.zeros(())
        for t in self.key.targets:
            lay = layers[t]
            u, v = self.proj[t]
            ub, av = u @ lay.seal_B, v @ lay.seal_A.T  # (T, r), (T, r)
            total = total + ((ub @ lay.passport) * av).sum(dim=1)
            ca = lay.passport @ lay.seal_A  # (r, k)
            energy = energy + ((lay.seal_B.T @ lay.seal_B) * (ca @ ca.T)).sum()  # ‖B·C·A‖²
        return total / torch.sqrt(energy + 1e-12)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return self.key.weight * torch.relu(self.key.margin - self.signs * self.z(model)).mean()
