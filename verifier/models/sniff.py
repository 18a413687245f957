"""Detection: the kind of a file from its first bytes (magic and structure, not the name)."""
from __future__ import annotations

import zipfile
from pathlib import Path

from verifier.models.errors import EXPORT_HINT, ModelFormatError, show

_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
               b"\x28\xb5\x2f\xfd": "zstd", b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!": "rar"}


def sniff_file(p: Path, size: int) -> str:
    """The kind of a file from its first bytes: safetensors, onnx, torch-zip, pickle, zip, tar."""
    name = show(p.name)
    if size == 0:
        raise ModelFormatError(f"the suspect {name} is an empty file (0 bytes); "
                               "send a safetensors, ONNX or PyTorch weights file")
    with open(p, "rb") as f:
        head = f.read(512)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip_kind(p)
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    for magic, what in _COMPRESSED.items():
        if head.startswith(magic):
            raise ModelFormatError(
                f"the suspect {name} is a {what}-compressed file; compressed archives are "
                "refused (their expanded size is unknown until unpacked): send the model "
                "file itself, or a .zip or uncompressed .tar of its folder")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head.startswith(b"GGUF"):
        raise ModelFormatError(f"the suspect {name} is a GGUF file, which Hallmark does not "
                               f"read; {EXPORT_HINT}")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        raise ModelFormatError(f"the suspect {name} is an HDF5 (Keras .h5) file, which Hallmark "
                               "does not read; export the model to ONNX (e.g. with tf2onnx)")
    if head[:1] == b"\x08":  # ONNX ModelProto starts with field 1 (ir_version) as a varint
        return "onnx"
    raise ModelFormatError(
        f"the suspect {name} ({size} bytes, starting {head[:8].hex()}) is not a recognized model "
        "format; send safetensors weights, an ONNX model, a PyTorch state dict saved with "
        "torch.save, a PEFT adapter folder, or a .zip/.tar of weights + ONNX")


def _zip_kind(p: Path) -> str:
    """torch-zip for torch.save archives, zip for other archives; TorchScript is refused."""
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()[:100_000]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelFormatError(f"the suspect {show(p.name)} looks like a zip archive but cannot "
                               f"be read ({e}); re-create the archive") from None
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    for top in tops:
        if f"{top}/constants.pkl" in names or any(n.startswith(f"{top}/code/") for n in names):
            raise ModelFormatError(
                f"the suspect {show(p.name)} is a TorchScript archive; TorchScript archives are "
                "refused (loading them runs their code): export the weights with "
                "safetensors.torch.save_file or the model with torch.onnx.export")
        if f"{top}/data.pkl" in names:
            return "torch-zip"
    return "zip"


def sniff_member(p: Path) -> str:
    """The kind of one file inside a model folder ("other" for anything not a model)."""
    try:
        return sniff_file(p, p.stat().st_size)
    except ModelFormatError:
        return "other"
