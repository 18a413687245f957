"""`advparams` encryption and decryption: `encrypt`, `generate_key`, `embed`, `decrypt`."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from verifier.schemes.advparams.key import Key
from verifier.schemes.advparams.material import secret_from
from verifier.schemes.advparams.params import AdvParamsError, Data, Params, Weights
from verifier.schemes.advparams.search import search


def encrypt(model: nn.Module, params: Params, seed: int | bytes, data: Data
            ) -> tuple[nn.Module, Key]:
    """Encrypt a copy of a trained model; return it with its key (the decryption material).

    Args:
        model: a trained float32 classifier (left untouched).
        params: the encryption parameters.
        seed: an int (reproducible) or bytes: picks the labelled subset, the keyed candidates
            and their dither.
        data: a labelled set (x, y), e.g. held-out data; `params.samples` examples are used.

    Returns:
        (encrypted copy, Key). `decrypt(encrypted, key)` restores the model bit-exact.

    Raises:
        AdvParamsError: bad data, or no float32 weights.

    Example:
        >>> from verifier import toy
        >>> s = toy.digits()
        >>> enc, key = encrypt(toy.train_digits(toy.MLP(), s, 10), Params(), 0, (s.x_held, s.y_held))
        >>> key.positions < 200
        True
    """
    if not isinstance(model, nn.Module):
        raise AdvParamsError(f"encrypt expects an nn.Module, received {type(model).__name__}")
    secret = secret_from(seed)
    enc_model, moves = search(model, params, secret, data)
    key = Key(params, secret, moves.tensors,
              torch.tensor(moves.which, dtype=torch.int64),
              torch.tensor(moves.index, dtype=torch.int64),
              torch.tensor(moves.orig, dtype=torch.float32),
              torch.tensor(moves.enc, dtype=torch.float32), moves.stats)
    return enc_model, key


def generate_key(params: Params, seed: int | bytes, model: nn.Module | None = None,
                 data: Data | None = None) -> Key:
    """Compute the AdvParams key of a model (positions depend on the model and the data).

    Same as `encrypt(model, params, seed, data)[1]`; `embed(model, key)` then applies it.

    Raises:
        AdvParamsError: model or data missing, or unusable.
    """
    if model is None or data is None:
        raise AdvParamsError("advparams.generate_key needs the trained model and a labelled set: "
                             "pass model=... and data=(x, y) (positions depend on both)")
    return encrypt(model, params, seed, data)[1]


def _weights_of(model: nn.Module | Weights) -> dict[str, torch.Tensor]:
    if isinstance(model, nn.Module):
        return {k: v.detach() for k, v in model.state_dict().items()}
    if isinstance(model, Mapping):
        return dict(model)
    raise AdvParamsError(f"expected an nn.Module or a mapping of named tensors, received "
                         f"{type(model).__name__}")


def _swap(weights: Weights, key: Key, expect: torch.Tensor, write: torch.Tensor,
          what: str) -> dict[str, torch.Tensor]:
    """Copies of `weights` with `write` at the key positions, after checking they hold `expect`."""
    out = dict(weights)
    for t, (name, shape) in enumerate(key.tensors):
        w = weights.get(name)
        if w is None or tuple(w.shape) != shape or w.dtype != torch.float32:
            raise AdvParamsError(
                f"tensor `{name}` is missing or not float32 of shape {shape} (found "
                f"{None if w is None else (w.dtype, tuple(w.shape))}); this is not the model "
                f"the key was made for")
        sel = key.which == t
        if not bool(sel.any()):
            continue
        idx = key.index[sel]
        flat = w.detach().contiguous().view(-1)
        if not torch.equal(flat[idx].view(torch.int32), expect[sel].view(torch.int32)):
            bad = int((flat[idx].view(torch.int32) != expect[sel].view(torch.int32)).sum())
            raise AdvParamsError(
                f"{bad} of the key's positions in `{name}` do not hold the {what} values; this "
                f"is not the model the key was made for (or it was modified since)")
        new = flat.clone()
        new[idx] = write[sel]
        out[name] = new.view(shape)
    return out


def _apply(model: nn.Module | Weights, weights: dict[str, torch.Tensor]) -> Any:
    if not isinstance(model, nn.Module):
        return weights
    out = copy.deepcopy(model)
    out.load_state_dict(weights)
    return out


@torch.no_grad()
def embed(model: nn.Module | Weights, key: Key, data: Any = None, **options: Any) -> Any:
    """Encrypt a copy of the model with an existing key (writes the encrypted values).

    Returns:
        An encrypted copy of the same kind (nn.Module, or dict of named tensors).

    Raises:
        AdvParamsError: the model does not hold the key's original values.
    """
    return _apply(model, _swap(_weights_of(model), key, key.orig, key.enc, "original"))


@torch.no_grad()
def decrypt(model: nn.Module | Weights, key: Key) -> Any:
    """Restore a copy of an encrypted model: the original values written back, bit-exact.

    Args:
        model: the encrypted model (nn.Module or named tensors, e.g. from safetensors).
        key: its key.

    Returns:
        A decrypted copy of the same kind; every tensor equals the original's bytes.

    Raises:
        AdvParamsError: the model does not hold the key's encrypted values.

    Example:
        >>> from verifier import toy
        >>> s = toy.digits(); m = toy.train_digits(toy.MLP(), s, 10)
        >>> enc, key = encrypt(m, Params(), 0, (s.x_held, s.y_held))
        >>> all(torch.equal(a, b) for a, b in zip(decrypt(enc, key).state_dict().values(),
        ...                                        m.state_dict().values()))
        True
    """
    return _apply(model, _swap(_weights_of(model), key, key.enc, key.orig, "encrypted"))
