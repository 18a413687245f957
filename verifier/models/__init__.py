"""Safe loading of suspect models: named weights and/or a runnable model from hostile files.

One entry point, `load_suspect(path)`, detects the format from the content (magic bytes and
structure, never the extension alone) and returns a `LoadedModel` whose `suspect` offers
white-box access (named tensors), black-box access (a batch predict function), or both.

Accepted formats (`LoadedModel.format`):
- "safetensors": the header is validated here before any tensor is touched (length within
  the file and capped, a JSON object without duplicate keys, offsets that exactly tile the
  data buffer, byte counts equal to dtype × shape, caps on tensor count and total bytes);
  tensors are then zero-copy views of a private memory map (pages load lazily).
- "onnx": parsed without external data; every external data location is checked (relative,
  no `..`, no symlinks or hardlinks, inside the model's folder, size caps) and read by us;
  float initializers become weights, an onnxruntime CPU session (1 thread) becomes predict.
- "torch-state-dict": `torch.load(weights_only=True)` only, in a child process with resource
  limits, which hands the tensors back as a safetensors file. TorchScript archives and
  full pickles are refused, never unpickled.
- "peft-adapter": a folder (or .zip/.tar of one) with adapter_config.json and
  adapter_model.safetensors; the weights are the adapter tensors, named as in the file.
- "bundle": a folder or .zip/.tar with one safetensors weights file and one runnable ONNX
  model of the same model; the suspect has both kinds of access.

Archives are unpacked into a scratch folder, refusing absolute or `..` members, links,
devices, duplicate names, encrypted members, too many members, and expansion past the caps
(zip bombs); the scratch folder is removed before `load_suspect` returns or raises.

Every refusal raises `ModelFormatError`, whose message names the problem, what was received,
and the fix. Nothing in this package unpickles anything in this process.

Modules: `load` (the entry point), `sniff` (detection), `safetensors_format`,
`safetensors_header` (header checks, shared with the range reads of `ranged`), `onnx_format`,
`torch_child` (the torch.load child), `archives` (unpacking), `paths` (safe relative paths),
`folders`, `bundle`, `peft_adapter`; `errors`, `limits` and `loaded` hold the public types.
`model_files(path)` yields the same files without loading them (the file, or the model folder
of a folder or archive) and `read_onnx(path)` parses one ONNX file with the same checks: for
checks beside the watermark tests, such as `verifier.provenance`.
"""
from verifier.models.errors import ModelFormatError
from verifier.models.limits import GiB, LoadLimits
from verifier.models.load import load_suspect, model_files
from verifier.models.loaded import FORMATS, LoadedModel
from verifier.models.onnx_format import read_onnx

__all__ = ["FORMATS", "GiB", "LoadLimits", "LoadedModel", "ModelFormatError", "load_suspect",
           "model_files", "read_onnx"]
