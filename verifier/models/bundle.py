"""A bundle: safetensors weights (white-box) + an ONNX model of the same model (black-box)."""
from __future__ import annotations

from pathlib import Path

from verifier.models.errors import ModelFormatError, show
from verifier.models.limits import LoadLimits
from verifier.models.loaded import LoadedModel
from verifier.models.onnx_format import onnx_session, onnx_weight_tensors, read_onnx_with_info
from verifier.models.safetensors_format import read_safetensors
from verifier.suspect import Suspect


def load_bundle(folder: Path, weights_name: str, onnx_name: str, limits: LoadLimits
                ) -> LoadedModel:
    """Safetensors weights (white-box) + an ONNX model of the same model (black-box).

    Initializers that share a name with a weight must have its shape and values (within
    1e-5 relative); a bundle whose ONNX model contradicts its weights is refused.
    """
    tensors, warnings, info = read_safetensors(folder / weights_name, limits, "the weights")
    model, onnx_info = read_onnx_with_info(folder / onnx_name, folder, limits)
    predict, io, onnx_warnings = onnx_session(model, limits)
    if predict is None:
        raise ModelFormatError(f"the bundle's ONNX model {show(onnx_name)} cannot run "
                               f"({'; '.join(onnx_warnings)}); a bundle needs a runnable model")
    onnx_weights = onnx_weight_tensors(model)
    common = sorted(set(tensors) & set(onnx_weights))
    worst = 0.0
    for name in common:
        a, b = tensors[name].float(), onnx_weights[name].float()
        if a.shape != b.shape:
            raise ModelFormatError(f"the bundle's weights and ONNX model disagree: {show(name)} "
                                   f"has shape {list(a.shape)} vs {list(b.shape)}; export both "
                                   "from the same model")
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        scale = float(a.abs().max()) if a.numel() else 0.0
        if not diff <= 1e-5 * (1.0 + scale):  # also catches NaN differences
            raise ModelFormatError(f"the bundle's weights and ONNX model disagree on "
                                   f"{show(name)} (max difference {diff:.3g}); export both "
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
