"""The caps applied while opening a suspect."""
from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30


@dataclass(frozen=True)
class LoadLimits:
    """Caps applied while opening a suspect. The defaults are meant for hostile input."""

    max_file_bytes: int = 8 * GiB  # any single file: the suspect, an archive member, external data
    max_header_bytes: int = 100_000_000  # safetensors JSON header (the safetensors library's cap)
    max_tensors: int = 100_000  # tensors in one weights file or ONNX model
    max_total_tensor_bytes: int = 8 * GiB  # all tensor bytes of one suspect
    max_archive_members: int = 10_000  # entries (files and folders) in a .zip/.tar or a folder
    max_expanded_bytes: int = 8 * GiB  # bytes written when unpacking one archive
    max_compression_ratio: float = 200.0  # zip member size / compressed size, for members > 1 MiB
    max_path_depth: int = 16  # folder nesting inside an archive or a model folder
    max_json_bytes: int = 1_000_000  # adapter_config.json
    torch_memory_bytes: int = 4 * GiB  # address space the torch.load child may add after start-up
    torch_cpu_seconds: int = 120  # CPU time of the torch.load child (RLIMIT_CPU)
    torch_wall_seconds: float = 300.0  # wall time before the torch.load child is killed
    onnx_threads: int = 1  # onnxruntime intra-op threads
    onnx_external_data_beside_file: bool = False  # a bare .onnx file may read data files next to it
