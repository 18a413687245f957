"""`seal` embedding: training with alternating passports and the bit hinge, finalize, release.

Every target nn.Linear gets ΔW = (alpha/r)·B·C_t·A with the key's fixed passports; training
alternates C_t between C and C_p batch by batch (`lora.train`). On top of SEAL, the released
update ΔW = (alpha/r)·B·C·A is trained to carry the key's T secret bits through a hinge on
normalized rank-one projections (`_BitLoss`). Release hides C in the factors and writes a
standard PEFT adapter (`lora.save_peft_adapter`).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from verifier.schemes.seal.base import target_weights, weights_digest
from verifier.schemes.seal.key import Key
from verifier.schemes.seal.lora import (
    SealLinear,
    SealSetupError,
    save_peft_adapter,
    seal_layers,
    train,
    unwrap,
    wrap,
)
from verifier.schemes.seal.material import projections, secret_bits


class _BitLoss:
    """The training hinge weight·mean_j relu(margin − b_j·z_j) on the released update B·C·A.

    It is off for the first `start` batches: z is normalized by ‖ΔW‖, which is zero when
    training starts (B = 0), and the huge early gradients would swamp Adam's second-moment
    estimates and stall the task for the rest of training. After a warm-up the task part of
    ΔW exists and the bits are written as a small change of its direction.
    """

    def __init__(self, key: Key, start: int = 0) -> None:
        self.key = key
        self.start = start  # batches to train without the hinge
        self.calls = 0  # batches seen so far
        self.signs = secret_bits(key.seed, key.bits)  # (T,)
        self.proj = {t: projections(key.seed, t, key.bits, key.shapes[t]) for t in key.targets}

    def z(self, model: nn.Module) -> torch.Tensor:
        """Normalized projections of the current released update, (T,)."""
        layers = seal_layers(model)
        total = torch.zeros(self.key.bits)
        energy = torch.zeros(())
        for t in self.key.targets:
            lay = layers[t]
            u, v = self.proj[t]  # (T, d), (T, k)
            ub = u @ lay.seal_B  # (T, r)
            av = v @ lay.seal_A.T  # (T, r)
            total = total + ((ub @ lay.passport) * av).sum(dim=1)  # uᵀ·B·C·A·v
            ca = lay.passport @ lay.seal_A  # (r, k)
            energy = energy + ((lay.seal_B.T @ lay.seal_B) * (ca @ ca.T)).sum()  # ‖B·C·A‖²
        return total / torch.sqrt(energy + 1e-12)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        self.calls += 1
        if self.calls <= self.start:
            return torch.zeros(())
        z = self.z(model)
        return self.key.weight * torch.relu(self.key.margin - self.signs * z).mean()


def embed(model: nn.Module, key: Key, data: Iterable[tuple[Any, torch.Tensor]] | None = None,
          **options: Any) -> nn.Module:
    """Train a SEAL adapter for `key` on `data`, on a copy of the base `model`.

    Args:
        model: the base model the key was generated for (left untouched).
        key: from `generate_key`.
        data: (inputs, labels) batches, all epochs included (e.g. `toy.batches(..., epochs=8)`).
        **options: lr (Adam, default 3e-3); trainable (parameter-name prefixes trained
            alongside the adapter, e.g. ("classifier",)); alternate (default True: C / C_p per
            batch, as SEAL); bit_loss (default True: the hinge that writes the key's bits);
            warmup (default 0.25: the fraction of batches trained before the hinge starts).

    Returns:
        A copy of the model with SEAL layers (passport C active), ready for `finalize_key`,
        `release` or `merge`.

    Raises:
        SealSetupError: no data, unknown option, or a model that is not the key's base.
    """
    unknown = set(options) - {"lr", "trainable", "alternate", "bit_loss", "warmup"}
    if unknown:
        raise SealSetupError(f"unknown embed options {sorted(unknown)}; "
                             "expected lr, trainable, alternate, bit_loss, warmup")
    if data is None:
        raise SealSetupError("seal embeds while training: pass data=(inputs, labels) batches")
    batches = list(data)
    if not batches:
        raise SealSetupError("data holds no batches: pass (inputs, labels) batches for all epochs")
    warmup = float(options.get("warmup", 0.25))
    if not 0.0 <= warmup < 1.0:
        raise SealSetupError(f"warmup is a fraction of the batches in [0, 1), received {warmup}")
    check_base(model, key)
    out = copy.deepcopy(model)
    wrap(out, key.targets, key.r, key.alpha, key.passports, seed=key.seed)
    extra = (_BitLoss(key, start=int(warmup * len(batches)))
             if options.get("bit_loss", True) and key.weight > 0 else None)
    return train(out, batches, lr=float(options.get("lr", 3e-3)),
                           trainable=tuple(options.get("trainable", ())),
                           alternate=bool(options.get("alternate", True)), extra_loss=extra)


@torch.no_grad()
def finalize_key(model: nn.Module, key: Key) -> Key:
    """The key to register: `key` plus the owner's pre-release B and A from the trained model.

    Raises:
        SealSetupError: the model was not trained with this key.
    """
    layers = check_trained(model, key)
    return replace(key, factors={t: (layers[t].seal_B.detach().clone(),
                                     layers[t].seal_A.detach().clone()) for t in key.targets})


def release(model: nn.Module, key: Key, out_dir: str | Path, *,
            modules_to_save: Sequence[str] = ()) -> Path:
    """Write the released adapter: a standard PEFT LoRA adapter with C hidden, C_p withheld.

    Args:
        model: the model returned by `embed`.
        key: the key it was trained with.
        out_dir: directory for adapter_model.safetensors and adapter_config.json.
        modules_to_save: trained modules shipped in full (e.g. ("classifier",)).

    Returns:
        The directory, loadable with `peft.PeftModel.from_pretrained(base, out_dir)`.

    Example:
        >>> # release(trained, key, "adapter/")  ->  PeftModel.from_pretrained(base, "adapter/")
    """
    check_trained(model, key)
    return save_peft_adapter(model, out_dir, modules_to_save=modules_to_save,
                                       base_model_name_or_path=key.base_name)


def merge(model: nn.Module, key: Key) -> nn.Module:
    """A plain copy with the released update folded into the base weights (a merged model)."""
    check_trained(model, key)
    return unwrap(model, merged=True)




def check_base(model: nn.Module, key: Key) -> None:
    """Raise SealSetupError unless `model`'s target weights are the key's base (shapes, digest)."""
    weights = target_weights(model, key.targets)
    shapes = {t: tuple(w.shape) for t, w in weights.items()}
    if shapes != {t: tuple(s) for t, s in key.shapes.items()}:
        raise SealSetupError(f"target shapes {shapes} differ from the key's {dict(key.shapes)}")
    if key.base_digest is not None and weights_digest(weights) != key.base_digest:
        raise SealSetupError("the model's target weights do not match the base digest in the key; "
                             "embed into the same base model the key was generated for")


def check_trained(model: nn.Module, key: Key) -> dict[str, SealLinear]:
    """The model's SEAL layers by target; SealSetupError unless it was trained with this key."""
    layers = seal_layers(model)
    for t in key.targets:
        if t not in layers:
            raise SealSetupError(f"target `{t}` of the key is not a SEAL layer of this model; "
                                 "pass the model returned by seal.embed")
        c, c_p = key.passports[t]
        if not (torch.equal(layers[t].passport, c.float())
                and torch.equal(layers[t].passport_p, c_p.float())):
            raise SealSetupError(f"SEAL layer `{t}` was trained with other passports than this key's")
    return layers
