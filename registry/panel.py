"""The reference panel: independent models per input domain, which screen keys at upload.

A key that carries inputs its seed cannot produce (`key.owner_chosen_inputs`) is tested against
every panel model of its domain (`verifier.screening.screen`); a key that innocent models answer
is refused. Rules encoded here:

- A key's **domain** is what it needs from a suspect, read from its public parameters: the
  input shape and the class count (`domain_of`, e.g. "input=64;classes=10"). A model's domain
  is measured, never declared: it must answer a batch of that input shape with one row of that
  many class scores (`add_model` probes it).
- Panel models are stored in the database (hosts share only PostgreSQL and Redis): an ONNX
  file, or a safetensors state dict plus an architecture name from `ARCHITECTURES`. Nothing is
  ever unpickled; both go through `verifier.models.load_suspect`.
- Loaded models are cached per process by (row id, sha256), so an upload loads each model once.
- The built-in digits panel (`digits_panel`) is 21 independently trained scikit-learn digits
  models (7 MLPs, 7 wide MLPs, 7 CNNs; seeds 9001-9021, disjoint from the seeds the demo and the
  tests use), built deterministically from their seeds on first use (`ensure_digits_panel`) and
  then stored like any other panel model.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from django.db import transaction
from torch import nn

from registry.models import ReferenceModel
from verifier import toy
from verifier.models import ModelFormatError, load_suspect
from verifier.suspect import Suspect

log = logging.getLogger("hallmark.panel")

# Architectures a safetensors state dict may name: constructor and input shape (no batch dim).
ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "digits-mlp": (toy.MLP, (64,)),
    "digits-mlp-wide": (lambda: toy.MLP(hidden=192), (64,)),
    "digits-cnn": (toy.CNN, (64,)),
}
FORMATS = ("safetensors", "onnx")
DIGITS_SEEDS = range(9001, 9022)  # 21 models; the demo and tests train with seeds < 2000
DIGITS_ARCHS = ("digits-mlp", "digits-mlp-wide", "digits-cnn")
DIGITS_EPOCHS = 30

_cache: dict[tuple[int, str], Suspect] = {}


class PanelError(ValueError):
    """A reference model that cannot join the panel (the message names the problem and fix)."""


def domain_of(public_params: Mapping[str, Any]) -> str | None:
    """The input domain a key needs, from its public parameters; None when they do not say.

    Example:
        >>> domain_of({"input_shape": [64], "classes": 10})
        'input=64;classes=10'
        >>> domain_of({"bits": 256}) is None
        True
    """
    shape, classes = public_params.get("input_shape"), public_params.get("classes")
    if not isinstance(shape, (list, tuple)) or not isinstance(classes, int):
        return None
    return f"input={'x'.join(str(int(d)) for d in shape)};classes={classes}"


def _shape_of(domain: str) -> tuple[int, ...]:
    return tuple(int(d) for d in domain.split(";")[0].removeprefix("input=").split("x"))


def _load(data: bytes, fmt: str, architecture: str) -> Suspect:
    """Load one panel model from its bytes (never unpickled), as a white- and black-box Suspect."""
    suffix = ".onnx" if fmt == "onnx" else ".safetensors"
    with tempfile.TemporaryDirectory(prefix="hm-panel-") as tmp:
        path = os.path.join(tmp, f"model{suffix}")
        with open(path, "wb") as f:
            f.write(data)
        loaded = load_suspect(path)
        if loaded.format != fmt:
            raise PanelError(f"the file is {loaded.format}, not {fmt}; pass --format "
                             f"{loaded.format}")
        if fmt == "onnx":
            return loaded.suspect
        if architecture not in ARCHITECTURES:
            raise PanelError(f"unknown architecture {architecture!r} for a safetensors state "
                             f"dict; expected one of {', '.join(ARCHITECTURES)}, or export ONNX")
        module = ARCHITECTURES[architecture][0]()
        try:
            module.load_state_dict({k: v.clone() for k, v in loaded.suspect.weights.items()})
        except RuntimeError as e:
            raise PanelError(f"the state dict does not fit {architecture}: {e}") from None
        return Suspect.from_module(module.eval())


@torch.no_grad()
def _probe(suspect: Suspect, shape: tuple[int, ...]) -> int:
    """The class count the model answers a batch of `shape` inputs with (PanelError if none)."""
    try:
        out = suspect.predict(torch.zeros(2, *shape))
    except Exception as e:  # an ONNX session refuses another input shape
        raise PanelError(f"the model does not accept inputs of shape {list(shape)}: {e}") from None
    if out.ndim != 2 or out.shape[0] != 2:
        raise PanelError(f"the model answers shape {list(out.shape)}, expected one row of class "
                         "scores per input")
    return int(out.shape[1])


def add_model(name: str, data: bytes, fmt: str, architecture: str = "",
              input_shape: Iterable[int] | None = None) -> ReferenceModel:
    """Validate, probe and store one panel model.

    Args:
        name: unique name shown in screening results.
        data: the file's bytes (ONNX, or a safetensors state dict of `architecture`).
        fmt: "onnx" or "safetensors".
        architecture: a key of ARCHITECTURES (safetensors only).
        input_shape: the input shape without batch dimension (default: the architecture's).

    Raises:
        PanelError: unknown format or architecture, unloadable file, wrong outputs, or a name
            already in the panel.
    """
    if fmt not in FORMATS:
        raise PanelError(f"format {fmt!r} is not accepted; use one of {', '.join(FORMATS)}")
    if fmt == "safetensors" and architecture not in ARCHITECTURES:
        raise PanelError(f"unknown architecture {architecture!r} for a safetensors state dict; "
                         f"expected one of {', '.join(ARCHITECTURES)}, or export ONNX")
    if ReferenceModel.objects.filter(name=name).exists():
        raise PanelError(f"a panel model named {name!r} exists; remove it first or pick another name")
    if input_shape is None:
        if architecture not in ARCHITECTURES:
            raise PanelError("give the model's input shape (--input-shape) for an ONNX model")
        input_shape = ARCHITECTURES[architecture][1]
    shape = tuple(int(d) for d in input_shape)
    try:
        suspect = _load(data, fmt, architecture)
    except ModelFormatError as e:
        raise PanelError(f"the panel model {name!r} cannot be loaded: {e}") from None
    domain = domain_of({"input_shape": list(shape), "classes": _probe(suspect, shape)})
    assert domain is not None
    return ReferenceModel.objects.create(
        name=name, domain=domain, format=fmt, architecture=architecture if fmt == "safetensors" else "",
        data=data, sha256=hashlib.sha256(data).hexdigest())


def suspects(domain: str) -> list[tuple[str, Suspect]]:
    """The panel of `domain` as (name, Suspect) pairs, loaded once per process."""
    rows = ReferenceModel.objects.filter(domain=domain).values_list("pk", "name", "sha256")
    panel = []
    for pk, name, sha in rows:
        if (pk, sha) not in _cache:
            row = ReferenceModel.objects.only("data", "format", "architecture").get(pk=pk)
            _cache[(pk, sha)] = _load(bytes(row.data), row.format, row.architecture)
        panel.append((name, _cache[(pk, sha)]))
    return panel


def digits_panel(seeds: Iterable[int] = DIGITS_SEEDS, epochs: int = DIGITS_EPOCHS
                 ) -> Iterable[tuple[str, str, nn.Module]]:
    """The built-in digits models, (name, architecture, model), each from its seed alone.

    The model of seed s has architecture DIGITS_ARCHS[s % 3] and takes its initial weights and
    batch order from s; all train on `toy.digits(seed=0)`'s training part for `epochs`.
    """
    split = toy.digits(seed=0)
    for seed in seeds:
        arch = DIGITS_ARCHS[seed % len(DIGITS_ARCHS)]
        yield f"{arch}-s{seed}", arch, toy.trained(split, seed, epochs, ARCHITECTURES[arch][0])


def state_dict_bytes(model: nn.Module) -> bytes:
    """A model's state dict as safetensors bytes (what `add_model` stores for an architecture)."""
    from safetensors.torch import save

    return save({k: v.detach().contiguous() for k, v in model.state_dict().items()})


def ensure_digits_panel(seeds: Iterable[int] = DIGITS_SEEDS, epochs: int = DIGITS_EPOCHS,
                        progress: Callable[[str], None] | None = None) -> int:
    """Build and store the digits models that are missing from the panel; returns how many."""
    have = set(ReferenceModel.objects.values_list("name", flat=True))
    added = 0
    for name, arch, model in digits_panel([s for s in seeds if not _has_seed(have, s)], epochs):
        with transaction.atomic():
            add_model(name, state_dict_bytes(model), "safetensors", arch)
        added += 1
        if progress is not None:
            progress(name)
    if added:
        log.info("panel: added %d built-in digits models", added)
    return added


def _has_seed(names: set[str], seed: int) -> bool:
    return any(n.endswith(f"-s{seed}") and n.startswith("digits-") for n in names)
