"""A bundle: safetensors weights (white-box) + an ONNX model of the same model (black-box)."""
from __future__ import annotations

from pathlib import Path

from verifier.models.errors import ModelFormatError, _show
from verifier.models.limits import LoadLimits
from verifier.models.loaded import LoadedModel
from verifier.models.onnx_format import _onnx_session, _onnx_weights, _read_onnx
from verifier.models.safetensors_format import _read_safetensors
from verifier.suspect import Suspect


def _load_bundle(folder: Path, weights_name: str, onnx_name: str, limits: LoadLimits
                 ) -> LoadedModel:
    """Safetensors weights (white-box) + an ONNX model of the same model (black-box).

    Initializers that share a name with a weight must have its shape and values (within
    1e-5 relative); a bundle whose ONNX model contradicts its weights is refused.
    """
    tensors, warnings, info = _read_safetensors(folder / weights_name, limits, "the weights")
    model, onnx_info = _read_onnx(folder / onnx_name, folder, limits)
    predict, io, onnx_warnings = _onnx_session(model, limits)
    if predict is None:
        raise ModelFormatError(f"the bundle's ONNX model {_show(onnx_name)} cannot run "
                               f"({'; '.join(onnx_warnings)}); a bundle needs a runnable model")
    onnx_weights = _onnx_weights(model)
    common = sorted(set(tensors) & set(onnx_weights))
    worst = 0.0
    for name in common:
        a, b = tensors[name].float(), onnx_weights[name].float()
        if a.shape != b.shape:
            raise ModelFormatError(f"the bundle's weights and ONNX model disagree: {_show(name)} "
                                   f"has shape {list(a.shape)} vs {list(b.shape)}; export both "
                                   "from the same model")
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        scale = float(a.abs().max()) if a.numel() else 0.0
        if not diff <= 1e-5 * (1.0 + scale):  # also catches NaN differences
            raise ModelFormatError(f"the bundle's weights and ONNX model disagree on "
                                   f"{_show(name)} (max difference {diff:.3g}); export both "
                                   "from the same model")
        worst = max(worst, diff)
    if not common:
        warnings.append("could not confirm that the bundle's ONNX model and weights are the same "
                        "model: no initializer names in common")
    suspect = Suspect(tensors, predict, description="bundle: safetensors weights + onnx model")
    details = {**info, "onnx": {**onnx_info, "io": io}, "weights_file": weights_name[:200],
               "onnx_file": onnx_name[:200],
               "consistency": {"compared": len(common), "max_abs_diff": worst}}
    return LoadedModel(suspect, "bundle", warnings, details)
