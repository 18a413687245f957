"""The `output_signature` wrapper: `SignedOutput` and `embed`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from verifier.schemes.output_signature.key import Key
from verifier.schemes.output_signature.keyed import lattice_dither
from verifier.schemes.output_signature.lattice import encode
from verifier.schemes.output_signature.params import OutputSignatureError


class SignedOutput(nn.Module):
    """A model wrapped so that its logits carry a keyed output signature.

    The inner model is `self.model` (its parameters train and attack as usual); the hash key
    is held in non-trainable float64 buffers, so it is saved in state dicts and exported with
    the graph. Gradients pass straight through the (piecewise-constant) lattice rounding.
    """

    def __init__(self, model: nn.Module, key: Key) -> None:
        super().__init__()
        a, c = key.hash_key()
        self.model = model
        self.sig_a: torch.Tensor  # (C, D) keyed hash matrix
        self.sig_c: torch.Tensor  # (C,) keyed hash offsets
        self.register_buffer("sig_a", a)
        self.register_buffer("sig_c", c)
        self.delta = key.params.delta
        self.scale_bits = key.params.scale_bits
        self.hash_bits = key.params.hash_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, *input_shape) -> (N, C)
        logits = self.model(x).to(torch.float64)  # (N, C)
        d = lattice_dither(x, self.sig_a, self.sig_c, self.scale_bits, self.hash_bits)  # (N, C)
        moved = encode(logits, d, self.delta)
        # straight-through: forward value `moved`, gradient of the identity
        return (logits + (moved - logits).detach()).to(torch.float32)


def embed(model: nn.Module, key: Key, data: Any = None, **options: Any) -> SignedOutput:
    """Wrap a model so that its logits carry the key's output signature.

    The wrapped model's top-1 prediction equals the inner model's on every input, and every
    other logit only moves down, by less than (e^delta - 1) times its gap to the top logit. Export it with `torch.onnx.export` to serve
    it: the signature is computed inside the graph.

    Args:
        model: a classifier returning (N, classes) logits for (N, *input_shape) inputs.
        key: from `generate_key`.
        data: unused (post-training scheme), accepted for the common contract.

    Returns:
        A SignedOutput wrapping `model` (the model itself, not a copy, sits inside).

    Raises:
        OutputSignatureError: the model's output does not have the key's shape.
    """
    if not isinstance(model, nn.Module):
        raise OutputSignatureError(f"embed expects an nn.Module, received {type(model).__name__}")
    probe = torch.zeros(1, *key.params.input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as e:  # any failure here means the shapes disagree; say which
        raise OutputSignatureError(
            f"the model cannot take inputs of shape {key.params.input_shape} from the key "
            f"({type(e).__name__}: {e}); generate the key with the model's input_shape") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, key.params.classes):
        raise OutputSignatureError(
            f"the model returns outputs of shape {tuple(out.shape[1:])} per input, the key "
            f"expects ({key.params.classes},) logits; generate the key with classes="
            f"{out.shape[-1]}")
    return SignedOutput(model, key)
