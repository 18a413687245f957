"""What `load_suspect` returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verifier.suspect import Suspect

FORMATS = ("safetensors", "onnx", "torch-state-dict", "peft-adapter", "bundle")
MAX_WARNINGS = 50  # warnings beyond this are summarized in one line


@dataclass
class LoadedModel:
    """What `load_suspect` found: the suspect, its format, warnings and JSON-safe details."""

    suspect: Suspect  # white-box and/or black-box access
    format: str  # one of FORMATS
    warnings: list[str] = field(default_factory=list)  # e.g. "tensor 'fc1.weight' has 12 NaN values"
    details: dict[str, Any] = field(default_factory=dict)  # sizes, ONNX I/O, adapter config, archive stats
