"""The error every refusal raises, and the helpers that write its messages safely."""
from __future__ import annotations

EXPORT_HINT = ("save the weights with safetensors.torch.save_file(model.state_dict(), "
               "'model.safetensors') or export the model with torch.onnx.export")


class ModelFormatError(ValueError):
    """A suspect Hallmark refuses to open. The message names the problem, what was received,
    and the fix.

    Example:
        >>> str(ModelFormatError("empty file: send a model file"))
        'empty file: send a model file'
    """


def show(value: object, limit: int = 80) -> str:
    """A quoted, escaped, truncated rendering of an untrusted string for messages."""
    text = value if isinstance(value, str) else str(value)
    shown = repr(text[:limit])
    return shown + ("…" if len(text) > limit else "")


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_size(size: int, cap: int, what: str) -> None:
    if size > cap:
        raise ModelFormatError(f"{what} is {size} bytes, over the cap of {cap} bytes; "
                               "send a smaller model or ask the operator to raise the cap")
