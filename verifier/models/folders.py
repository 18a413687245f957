"""Model folders: scanned without following links, then read as an adapter, ONNX, weights or
a bundle."""
from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from verifier.models.archives import check_count
from verifier.models.bundle import load_bundle
from verifier.models.errors import EXPORT_HINT, ModelFormatError, show
from verifier.models.limits import LoadLimits
from verifier.models.loaded import LoadedModel
from verifier.models.onnx_format import load_onnx_model
from verifier.models.peft_adapter import load_adapter
from verifier.models.safetensors_format import read_safetensors
from verifier.models.sniff import sniff_member
from verifier.suspect import Suspect


def _scan_folder(root: Path, limits: LoadLimits) -> list[PurePosixPath]:
    """Every regular file under `root` (relative paths); links and special files are refused."""
    files: list[PurePosixPath] = []
    count = 0
    stack: list[tuple[Path, PurePosixPath]] = [(root, PurePosixPath())]
    while stack:
        folder, rel = stack.pop()
        if len(rel.parts) > limits.max_path_depth:
            raise ModelFormatError(f"the model folder nests more than {limits.max_path_depth} "
                                   "folders deep; send only the model files")
        with os.scandir(folder) as it:
            for entry in it:
                count += 1
                check_count(count, limits, "the model folder")
                shown = show(str(rel / entry.name))
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise ModelFormatError(f"the model folder holds a symbolic link ({shown}); "
                                           "links are refused: copy the file itself")
                if stat.S_ISDIR(st.st_mode):
                    stack.append((Path(entry.path), rel / entry.name))
                elif stat.S_ISREG(st.st_mode):
                    if st.st_nlink != 1:
                        raise ModelFormatError(f"the model folder holds a hard link ({shown}); "
                                               "links are refused: copy the file itself")
                    files.append(rel / entry.name)
                else:
                    raise ModelFormatError(f"the model folder holds a special file ({shown}); "
                                           "send only plain files")
    return files


def _model_base(files: list[PurePosixPath]) -> PurePosixPath:
    """The model folder inside a scanned folder: an archive of a folder holds one top-level
    folder (or a chain of them), so descend while there is a single one."""
    base = PurePosixPath()
    while True:
        tops = {f.relative_to(base).parts[0] for f in files if f.is_relative_to(base)}
        top = base / next(iter(tops)) if len(tops) == 1 else None
        if top is None or any(f == top for f in files):
            return base
        base = top


def model_folder(root: Path, limits: LoadLimits) -> Path:
    """The model folder under `root` (links and special files refused, as when loading)."""
    return root.joinpath(*_model_base(_scan_folder(root, limits)).parts)


def load_folder(root: Path, limits: LoadLimits) -> LoadedModel:
    """A model folder: a PEFT adapter, an ONNX model (with external data), safetensors
    weights, or a bundle of safetensors weights + an ONNX model."""
    files = _scan_folder(root, limits)
    base = _model_base(files)
    folder = root.joinpath(*base.parts)
    top_files = sorted(f.name for f in files if f.parent == base)
    if "adapter_config.json" in top_files:
        return load_adapter(folder, top_files, limits)
    weights, onnx_files, pickles = [], [], []
    for name in top_files:
        kind = sniff_member(folder / name)
        if kind == "safetensors":
            weights.append(name)
        elif kind == "onnx" and name.lower().endswith(".onnx"):
            onnx_files.append(name)
        elif kind in ("pickle", "torch-zip"):
            pickles.append(name)
    if len(weights) > 1 or len(onnx_files) > 1:
        raise ModelFormatError(
            f"the model folder holds {len(weights)} safetensors files and {len(onnx_files)} ONNX "
            f"models ({show(', '.join(weights + onnx_files), 200)}); send one weights file "
            "and/or one ONNX model (sharded checkpoints are not supported: merge the shards)")
    notes = [f"ignored {show(n)}: pickle files inside a folder or archive are never opened"
             for n in pickles]
    if not weights and not onnx_files:
        raise ModelFormatError(
            f"the model folder holds no safetensors weights, ONNX model or PEFT adapter (files: "
            f"{show(', '.join(top_files), 200)}); {EXPORT_HINT}"
            + (" (pickled weights are refused inside archives)" if pickles else ""))
    if onnx_files and not weights:
        loaded = load_onnx_model(folder / onnx_files[0], folder, limits)
    elif weights and not onnx_files:
        tensors, warnings, info = read_safetensors(folder / weights[0], limits, "the weights")
        loaded = LoadedModel(Suspect.from_weights(tensors), "safetensors", warnings, info)
    else:
        loaded = load_bundle(folder, weights[0], onnx_files[0], limits)
    loaded.warnings[:0] = notes
    loaded.details["files"] = [n[:200] for n in top_files[:50]]
    return loaded
