"""`load_suspect`: the one entry point, dispatching on what the content is."""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from verifier.models.archives import unpack_tar, unpack_zip
from verifier.models.errors import ModelFormatError, check_size, show
from verifier.models.folders import load_folder, model_folder
from verifier.models.limits import LoadLimits
from verifier.models.loaded import LoadedModel
from verifier.models.onnx_format import load_onnx_model
from verifier.models.safetensors_format import read_safetensors
from verifier.models.sniff import sniff_file
from verifier.models.torch_child import load_torch
from verifier.suspect import Suspect


def load_suspect(path: str | os.PathLike[str],
                 limits: LoadLimits = LoadLimits(),  # noqa: B008 - frozen, so shared safely
                 *, scratch_dir: str | os.PathLike[str] | None = None) -> LoadedModel:
    """Open a suspect model file, folder or archive without trusting it.

    Args:
        path: a file (safetensors, ONNX, torch state dict, .zip/.tar) or a folder
            (PEFT adapter, ONNX with external data, weights + ONNX bundle).
        limits: caps on sizes, counts and the torch.load child's resources.
        scratch_dir: where archives are unpacked and the torch.load child writes
            (default: the system temp folder); nothing is left there afterwards.

    Returns:
        A LoadedModel; `suspect.has_weights` / `suspect.has_predict` tell which access it offers.

    Raises:
        ModelFormatError: the input is refused; the message says why and how to fix it.

    Example:
        >>> import torch
        >>> from safetensors.torch import save_file
        >>> save_file({"w": torch.ones(2, 2)}, "/tmp/w.safetensors")
        >>> m = load_suspect("/tmp/w.safetensors")
        >>> m.format, sorted(m.suspect.weights)
        ('safetensors', ['w'])
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise ModelFormatError(f"cannot open the suspect {show(p.name)}: {e.strerror}; "
                               "check that the file was fetched") from None
    scratch = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
    if stat.S_ISDIR(st.st_mode):
        return load_folder(p, limits)
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"the suspect {show(p.name)} is not a regular file (a device, "
                               "pipe or socket); send a model file")
    check_size(st.st_size, limits.max_file_bytes, f"the suspect {show(p.name)}")
    kind = sniff_file(p, st.st_size)
    if kind == "safetensors":
        tensors, warnings, info = read_safetensors(p, limits, "the suspect")
        return LoadedModel(Suspect.from_weights(tensors), "safetensors", warnings,
                           {"bytes": st.st_size, **info})
    if kind == "onnx":
        folder = p.parent if limits.onnx_external_data_beside_file else None
        return load_onnx_model(p, folder, limits)
    if kind in ("torch-zip", "pickle"):
        return load_torch(p, st.st_size, limits, scratch, use_mmap=kind == "torch-zip")
    # a .zip or .tar of a folder
    with tempfile.TemporaryDirectory(dir=scratch, prefix="hallmark-unpack-") as tmp:
        root = Path(tmp) / "unpacked"
        root.mkdir()
        unpack = unpack_zip if kind == "zip" else unpack_tar
        stats = unpack(p, root, limits)
        loaded = load_folder(root, limits)
    loaded.details["archive"] = {"kind": kind, "bytes": st.st_size, **stats}
    return loaded


@contextmanager
def model_files(path: str | os.PathLike[str],
                limits: LoadLimits = LoadLimits(),  # noqa: B008 - frozen, so shared safely
                *, scratch_dir: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """The files of a suspect as `load_suspect` sees them, for checks beside the watermark
    tests (e.g. a publisher's signature shipped in the archive).

    Yields the file itself for a single file, or the model folder for a folder or a .zip/.tar
    (unpacked into a scratch folder with the same refusals as `load_suspect`, and descended
    into while it holds a single folder); the scratch folder is removed on exit.

    Raises:
        ModelFormatError: the archive or folder is refused (as `load_suspect` would).

    Example:
        >>> with model_files("suspect.zip") as folder:  # doctest: +SKIP
        ...     sorted(p.name for p in folder.iterdir())
        ['model.onnx', 'model.sig']
    """
    p = Path(path)
    if p.is_dir():
        yield model_folder(p, limits)
        return
    st = p.stat()
    check_size(st.st_size, limits.max_file_bytes, f"the suspect {show(p.name)}")
    kind = sniff_file(p, st.st_size)
    if kind not in ("zip", "tar"):
        yield p
        return
    scratch = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=scratch, prefix="hallmark-files-") as tmp:
        root = Path(tmp) / "unpacked"
        root.mkdir()
        (unpack_zip if kind == "zip" else unpack_tar)(p, root, limits)
        yield model_folder(root, limits)
