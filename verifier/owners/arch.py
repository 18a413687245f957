"""The owner's own architecture: `package.module:factory` called with no arguments, then the
weights loaded into it (strictly: every name and shape must match).

This imports the owner's code on the owner's machine, exactly as their training script
does; it is never used on a suspect (suspects are only ever read by `verifier.models`).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping

import torch
from torch import nn

from verifier.owners.errors import OwnerToolError


def build(spec: str, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """`factory()` from `module:factory`, with `weights` loaded, in eval mode.

    Example:
        >>> m = build("verifier.toy:MLP", __import__("verifier.toy").toy.MLP().state_dict())
        >>> type(m).__name__
        'MLP'
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise OwnerToolError(f"--arch {spec!r}: expected `package.module:factory`, e.g. "
                             "`verifier.toy:MLP` (a class or function returning the nn.Module)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise OwnerToolError(f"--arch {spec!r}: cannot import {module_name} ({e}); run from the "
                             "folder holding it or add it to PYTHONPATH") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)  # type: ignore[assignment]
        if factory is None:
            raise OwnerToolError(f"--arch {spec!r}: {module_name} has no attribute {attr}")
    model = factory()  # type: ignore[operator]
    if not isinstance(model, nn.Module):
        raise OwnerToolError(f"--arch {spec!r} returned a {type(model).__name__}, not a "
                             "torch.nn.Module")
    try:
        model.load_state_dict(dict(weights), strict=True)
    except RuntimeError as e:
        raise OwnerToolError(f"the weights do not fit --arch {spec!r}: {str(e)[:500]}") from None
    return model.float().eval()
