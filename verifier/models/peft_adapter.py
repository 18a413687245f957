"""A PEFT LoRA adapter folder: adapter_config.json + adapter_model.safetensors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from verifier.models.errors import ModelFormatError, is_int, show
from verifier.models.limits import LoadLimits
from verifier.models.loaded import LoadedModel
from verifier.models.safetensors_format import read_safetensors
from verifier.models.safetensors_header import parse_json_object
from verifier.suspect import Suspect

_ADAPTER_FIELDS = ("base_model_name_or_path", "peft_type", "task_type", "r", "lora_alpha",
                   "lora_dropout", "target_modules", "use_dora", "use_rslora", "bias")


def load_adapter(folder: Path, top_files: list[str], limits: LoadLimits) -> LoadedModel:
    """A PEFT LoRA adapter folder: adapter_config.json + adapter_model.safetensors."""
    fix = "save the adapter with model.save_pretrained(path) (safe_serialization=True)"
    cfg_path = folder / "adapter_config.json"
    size = cfg_path.stat().st_size
    if size > limits.max_json_bytes:
        raise ModelFormatError(f"adapter_config.json is {size} bytes, over the "
                               f"{limits.max_json_bytes}-byte cap; {fix}")
    config = parse_json_object(cfg_path.read_bytes(), "adapter_config.json", fix)
    if config.get("peft_type") != "LORA":
        raise ModelFormatError(f"adapter_config.json has peft_type {show(config.get('peft_type'))}"
                               "; Hallmark reads LoRA adapters only (peft_type \"LORA\")")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not (isinstance(r, int) and is_int(r) and r > 0) or not (
            isinstance(alpha, int | float) and not isinstance(alpha, bool)):
        raise ModelFormatError(f"adapter_config.json has r={show(r)} and lora_alpha="
                               f"{show(alpha)}; expected a positive integer rank and a number; "
                               f"{fix}")
    targets = config.get("target_modules")
    if targets is not None and not (isinstance(targets, str) or (
            isinstance(targets, list) and all(isinstance(t, str) for t in targets))):
        raise ModelFormatError(f"adapter_config.json has target_modules {show(targets)}; "
                               f"expected a list of module names or a pattern; {fix}")
    if "adapter_model.safetensors" not in top_files:
        pickled = "adapter_model.bin" in top_files
        raise ModelFormatError(
            "the PEFT adapter has no adapter_model.safetensors"
            + (" (adapter_model.bin is a pickle and is never opened)" if pickled else "")
            + f"; {fix}")
    tensors, warnings, info = read_safetensors(folder / "adapter_model.safetensors", limits,
                                               "the adapter weights")
    if not any("lora_A" in n or "lora_B" in n for n in tensors):
        raise ModelFormatError("adapter_model.safetensors holds no lora_A / lora_B tensors, so it "
                               f"is not a LoRA adapter; {fix}")
    adapter = {k: _json_safe(config.get(k)) for k in _ADAPTER_FIELDS if k in config}
    suspect = Suspect.from_weights(tensors)
    suspect.description = "peft lora adapter"
    return LoadedModel(suspect, "peft-adapter", warnings, {**info, "adapter": adapter})


def _json_safe(v: Any) -> Any:
    """Config values as JSON-safe data, with strings truncated."""
    if isinstance(v, str):
        return v[:200]
    if isinstance(v, list):
        return [_json_safe(x) for x in v[:100]]
    if isinstance(v, dict):
        return {str(k)[:100]: _json_safe(x) for k, x in list(v.items())[:100]}
    if v is None or isinstance(v, bool | int | float):
        return v
    return str(v)[:200]
