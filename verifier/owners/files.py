"""Model files an owner marks: read through `verifier.models` (never unpickled), written back
in the same format with new weights.

Formats (`ModelFile.format`):
- "safetensors": one file; its `__metadata__` is kept;
- "peft-adapter": a folder with adapter_config.json and adapter_model.safetensors; the
  output is a copy of the folder with the adapter weights replaced;
- "onnx": one file (external data beside it, as torch's dynamo exporter writes, is read);
  initializers are replaced in place, everything else is kept, and the output is one
  self-contained file.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from verifier.models import LoadedModel, LoadLimits, ModelFormatError, load_suspect
from verifier.owners.errors import OwnerToolError
from verifier.owners.output import write_atomically

WRITABLE = ("safetensors", "peft-adapter", "onnx")
_ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class ModelFile:
    """A model file (or adapter folder) read for marking."""

    path: Path  # the file or folder as given
    format: str  # one of WRITABLE
    loaded: LoadedModel  # what verifier.models found (weights and/or predict)
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors __metadata__, kept

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The named tensors (all of a safetensors file; float initializers of an ONNX model)."""
        if not self.loaded.suspect.has_weights:
            raise OwnerToolError(f"{self.path} offers no weights to mark")
        return dict(self.loaded.suspect.weights)


def read_model(path: Path) -> ModelFile:
    """Open a model for marking with the same safe loaders the registry uses.

    Raises:
        OwnerToolError: unreadable, refused by the loaders, or a format that cannot be written
            back (a torch pickle, a bundle): the message says which formats work.
    """
    try:
        # the owner's own file: an ONNX export may keep its weights in a data file beside it
        loaded = load_suspect(path, LoadLimits(onnx_external_data_beside_file=True))
    except ModelFormatError as e:
        raise OwnerToolError(f"cannot read {path}: {e}") from None
    if loaded.format not in WRITABLE:
        raise OwnerToolError(
            f"{path} is a {loaded.format} model; `hallmark watermark` writes {', '.join(WRITABLE)}"
            " (save torch weights with safetensors.torch.save_file(model.state_dict(), path))")
    metadata: dict[str, str] = {}
    weights_file = path / _ADAPTER_WEIGHTS if loaded.format == "peft-adapter" else path
    if loaded.format in ("safetensors", "peft-adapter"):
        from safetensors import safe_open

        with safe_open(str(weights_file), framework="pt") as f:  # header only: already validated
            metadata = dict(f.metadata() or {})
    return ModelFile(path, loaded.format, loaded, metadata)


def write_model(source: ModelFile, weights: Mapping[str, torch.Tensor], out: Path) -> None:
    """Write `source` with `weights` replacing its tensors, in the same format, to `out`.

    Raises:
        OwnerToolError: `out` exists, or cannot be written.
    """
    def safetensors_file(target: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in weights.items()}, str(target),
                  metadata=source.metadata or None)

    def adapter_folder(target: Path) -> None:
        shutil.copytree(source.path, target, symlinks=False)
        (target / _ADAPTER_WEIGHTS).unlink()
        safetensors_file(target / _ADAPTER_WEIGHTS)

    def onnx_file(target: Path) -> None:
        save_onnx(replace_initializers(load_onnx(source.path), weights), target)

    writers = {"safetensors": safetensors_file, "peft-adapter": adapter_folder, "onnx": onnx_file}
    try:
        write_atomically(out, "--out", writers[source.format])
    except OSError as e:
        raise OwnerToolError(f"cannot write {out}: {e.strerror or e}") from None


def load_onnx(path: Path) -> Any:
    """The ONNX ModelProto of a file `read_model` accepted (external data inlined)."""
    import onnx

    return onnx.load(str(path), load_external_data=True)


def save_onnx(model: Any, target: Path) -> None:
    """Save a ModelProto, checked first so that a broken graph is never written."""
    import onnx

    onnx.checker.check_model(model)
    onnx.save_model(model, str(target))


def replace_initializers(model: Any, weights: Mapping[str, torch.Tensor]) -> Any:
    """The model with every initializer named in `weights` replaced (same name, dtype, shape)."""
    from onnx import numpy_helper

    by_name = {init.name: init for init in model.graph.initializer}
    for name, tensor in weights.items():
        init = by_name.get(name)
        if init is None:
            raise OwnerToolError(f"the ONNX graph has no initializer `{name}` to write")
        old = numpy_helper.to_array(init)
        new = tensor.detach().cpu().numpy().astype(old.dtype, copy=False).reshape(old.shape)
        if new.tobytes() != old.tobytes():
            init.CopyFrom(numpy_helper.from_array(new, name))
    return model
