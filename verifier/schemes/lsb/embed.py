"""`lsb` key generation and embedding: draw the positions, sign the masked digest, write bits."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from verifier.schemes.lsb.key import Key
from verifier.schemes.lsb.params import LSBError, Params
from verifier.schemes.lsb.positions import (
    check_finite,
    draw_positions,
    layout_of,
    masked_digest,
    secret_from,
)

Weights = Mapping[str, torch.Tensor]


def weights_of(model: nn.Module | Weights) -> dict[str, torch.Tensor]:
    """The named tensors of a module or a mapping (detached, not copied)."""
    if isinstance(model, nn.Module):
        return {k: v.detach() for k, v in model.state_dict().items()}
    if isinstance(model, Mapping):
        return {k: v.detach() for k, v in model.items()}
    raise LSBError(f"expected an nn.Module or a mapping of named tensors, received "
                   f"{type(model).__name__}")


def generate_key(params: Params, seed: int | bytes, model: nn.Module | Weights | None = None) -> Key:
    """Derive an `lsb` key for one trained model.

    Positions are drawn from the seed over the model's float32 layout and the signature covers
    its masked weights, so the model is required. The key is computed from the unmarked model,
    and embedding only changes the bits that the digest clears, so the digest also holds for
    the marked model.

    Args:
        params: public parameters (bits per weight, repetitions).
        seed: an int (reproducible) or bytes (in production: `secrets.token_bytes(32)`).
        model: the trained model (nn.Module or named tensors) that will be signed.

    Returns:
        The Key.

    Raises:
        LSBError: no model given, too few float32 weights to hold the signature, or a
            non-finite weight at a drawn position.

    Example:
        >>> key = generate_key(Params(k=4), seed=1, model=torch.nn.Linear(64, 64))
        >>> key.params.n_bits
        1536
    """
    if model is None:
        raise LSBError("lsb.generate_key needs the trained model: positions and the signed "
                       "digest depend on its weights; pass model=...")
    weights = weights_of(model)
    layout = layout_of(weights)
    if not layout:
        raise LSBError("the model has no float32 tensors; lsb signs float32 weights only "
                       "(convert the model with .float() before signing)")
    secret = secret_from(seed)
    positions = draw_positions(secret, layout, params.positions)
    check_finite(weights, positions)
    return Key(params, secret, layout, positions,
               masked_digest(weights, layout, positions, params.k))


def _write(weights: dict[str, torch.Tensor], key: Key) -> dict[str, torch.Tensor]:
    """Copies of the weights with the key's bits written (the input is left untouched)."""
    if layout_of(weights) != key.layout:
        raise LSBError("this model's float32 tensors (names, shapes) differ from the ones the key "
                       "was generated for; generate a key from this model with generate_key")
    if masked_digest(weights, key.layout, key.positions, key.params.k) != key.masked_digest:
        raise LSBError("this model's weights differ from the ones the key signed (masked digest "
                       "mismatch); generate a key from this exact model with generate_key")
    k = key.params.k
    bits = key.expected_bits().view(-1, k).to(torch.int32)  # (positions, k)
    values = (bits << torch.arange(k, dtype=torch.int32)).sum(dim=1)  # (positions,)
    out = {n: t.clone(memory_format=torch.contiguous_format) for n, t in weights.items()}
    for (name, index), v in zip(key.positions, values.tolist(), strict=True):
        ints = out[name].view(torch.int32).view(-1)
        ints[index] = (int(ints[index]) & ~((1 << k) - 1)) | v
    return out


@torch.no_grad()
def embed(model: nn.Module | Weights, key: Key, data: Any = None, **options: Any) -> Any:
    """Write the signature into a copy of the model (the input is left untouched).

    Args:
        model: the model the key was generated from (nn.Module or named tensors).
        key: from `generate_key(params, seed, model=model)`.
        data: unused (post-training scheme), accepted for the common contract.

    Returns:
        A signed copy of the same kind: an nn.Module, or a dict of named tensors.

    Raises:
        LSBError: the model is not the one the key was generated from.
    """
    weights = weights_of(model)
    signed = _write(weights, key)
    if not isinstance(model, nn.Module):
        return signed
    out = copy.deepcopy(model)
    out.load_state_dict(signed)
    return out
