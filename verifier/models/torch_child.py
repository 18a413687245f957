"""PyTorch state dicts, via torch.load(weights_only=True) in a resource-limited child process."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from verifier.models.errors import EXPORT_HINT, ModelFormatError, show
from verifier.models.limits import GiB, LoadLimits
from verifier.models.loaded import MAX_WARNINGS, LoadedModel
from verifier.models.safetensors_format import read_safetensors
from verifier.suspect import Suspect

_CHILD_CODE = "import verifier.models.torch_child as m; m._torch_child_main()"


def load_torch(p: Path, size: int, limits: LoadLimits, scratch: Path, use_mmap: bool
               ) -> LoadedModel:
    """Load a torch.save file in a resource-limited child that returns tensors as safetensors."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix="hallmark-torch-") as tmp:
        out = Path(tmp) / "weights.safetensors"
        cmd = [sys.executable, "-I", "-c", _CHILD_CODE, str(p.resolve()), str(out),
               str(limits.torch_memory_bytes + (size if use_mmap else 0)),
               str(limits.torch_cpu_seconds), str(min(limits.max_total_tensor_bytes + 2 * GiB,
                                                      2**62)), "1" if use_mmap else "0"]
        env = {"PATH": os.environ.get("PATH", os.defpath), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1", "LC_ALL": "C.UTF-8"}
        try:
            proc = subprocess.run(cmd, env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=limits.torch_wall_seconds)
        except subprocess.TimeoutExpired:
            raise ModelFormatError(
                f"loading the PyTorch file {show(p.name)} took longer than "
                f"{limits.torch_wall_seconds:g} s and was stopped; {EXPORT_HINT}") from None
        status = _child_status(proc)
        if not status.get("ok"):
            raise ModelFormatError(_child_refusal(p.name, status, proc.returncode, limits))
        tensors, warnings, info = read_safetensors(out, limits, "the state dict of")
    raw_notes = status.get("notes")
    notes: list[Any] = raw_notes if isinstance(raw_notes, list) else []
    # in place: the list keeps growing as tensors are read (NaN/Inf warnings)
    warnings[:0] = [re.sub(r"[^\x20-\x7e]", "", str(n))[:200] for n in notes][:MAX_WARNINGS]
    return LoadedModel(Suspect.from_weights(tensors), "torch-state-dict", warnings,
                       {"bytes": size, "container": "zip" if use_mmap else "legacy pickle",
                        **info})


def _child_status(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    """The child's one-line JSON verdict (the last stdout line), or {} if there is none."""
    lines = proc.stdout[-65536:].decode("utf-8", "replace").strip().splitlines()
    try:
        status = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return status if isinstance(status, dict) else {}


def _child_refusal(name: str, status: Mapping[str, Any], returncode: int,
                   limits: LoadLimits) -> str:
    """The user-facing message for a torch.load child that refused or died."""
    what, kind = f"the PyTorch file {show(name)}", status.get("kind")
    detail = re.sub(r"[^\w .,:()-]", "", str(status.get("detail", "")))[:200]
    if kind == "weights_only":
        return (f"{what} is a pickle that torch.load(weights_only=True) refuses ({detail}); full "
                "pickles are never opened because unpickling them can run code: "
                f"{EXPORT_HINT}")
    if kind == "torchscript":
        return (f"{what} is a TorchScript archive; TorchScript archives are refused (loading them "
                "runs their code): export the weights with safetensors.torch.save_file or the "
                "model with torch.onnx.export")
    if kind == "not_state_dict":
        return f"{what} does not hold a state dict ({detail}); {EXPORT_HINT}"
    if kind == "memory" or returncode in (-9,):
        return (f"loading {what} needed more than its memory budget of "
                f"{limits.torch_memory_bytes} bytes; {EXPORT_HINT}")
    if returncode in (-24, 152):  # SIGXCPU
        return (f"loading {what} used more than {limits.torch_cpu_seconds} s of CPU and was "
                f"stopped; {EXPORT_HINT}")
    if kind == "invalid":
        return f"{what} is not a readable torch.save file ({detail}); {EXPORT_HINT}"
    return (f"loading {what} failed (loader exit code {returncode}); {EXPORT_HINT}")


def _torch_child_main() -> None:  # pragma: no cover - runs in the child process
    """Child entry point: rlimits, torch.load(weights_only=True), state dict -> safetensors.

    argv: source, output, memory budget (bytes above start-up), CPU seconds, output size cap,
    use_mmap ("1" for zip archives). Prints one JSON line: {"ok": true, "notes": [...]} or
    {"ok": false, "kind": ..., "detail": ...}. It never calls pickle itself and never retries
    with weights_only=False.
    """
    import pickle
    import resource

    from safetensors.torch import save_file

    src, out, mem, cpu, fsize, use_mmap = sys.argv[1:7]
    torch.set_num_threads(1)

    def report(**status: Any) -> None:
        print(json.dumps(status), flush=True)
        raise SystemExit(0)

    vm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                vm = int(line.split()[1]) * 1024
    limit = vm + int(mem)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize), int(fsize)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True, mmap=use_mmap == "1")
    except pickle.UnpicklingError as e:
        report(ok=False, kind="weights_only", detail=_weights_only_reason(str(e)))
    except MemoryError:
        report(ok=False, kind="memory", detail="")
    except RuntimeError as e:
        if "TorchScript" in str(e):
            report(ok=False, kind="torchscript", detail="")
        report(ok=False, kind="invalid", detail=str(e).splitlines()[0][:200] if str(e) else "")
    except Exception as e:  # any other parse failure is a refusal, never a fallback
        report(ok=False, kind="invalid", detail=f"{type(e).__name__}: {str(e)[:200]}")
    try:
        state, notes = _state_dict_of(obj)
    except ValueError as e:
        report(ok=False, kind="not_state_dict", detail=str(e))
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, out)
    except MemoryError:
        report(ok=False, kind="memory", detail="")
    report(ok=True, notes=notes)


def _weights_only_reason(message: str) -> str:
    """The specific reason in a weights_only refusal (never torch's advice to disable it)."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"it references the Python object {m.group(1)}"
    m = re.search(r"Unsupported operand (\d+)", message)
    if m:
        return f"it uses pickle opcode {m.group(1)}, which weights-only loading does not allow"
    return "it is not a weights-only pickle"


def _state_dict_of(obj: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a loaded object: a name -> tensor mapping, possibly wrapped once under
    "state_dict", "model" or "model_state_dict" (as training checkpoints do)."""
    notes: list[str] = []
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                notes.append(f"used the checkpoint's {key!r} entry as the state dict")
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"it holds a {type(obj).__name__}, not a mapping of names to tensors")
    state: dict[str, torch.Tensor] = {}
    skipped = 0
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            skipped += 1
            continue
        if v.layout != torch.strided or v.is_quantized:
            raise ValueError(f"tensor {k[:80]!r} is {v.layout} / quantized; save dense tensors")
        state[k] = v
    if not state:
        raise ValueError("it holds no named tensors")
    if skipped:
        notes.append(f"ignored {skipped} entries that are not named tensors")
    return state, notes
