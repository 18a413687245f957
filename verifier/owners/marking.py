"""Post-training schemes applied to model files: `watermark_file`.

What each scheme reads and writes:
- lsb: safetensors file, PEFT adapter folder or ONNX file -> the same format, signed;
- output_signature: an ONNX classifier (the signer is appended to its graph), or safetensors
  weights with `arch` (the owner's module, wrapped and exported) -> ONNX;
- advparams: safetensors weights with `arch` and labelled `data` -> encrypted safetensors
  (`hallmark decrypt` restores it with a licence).

Rules: inputs are read with the registry's own safe loaders; nothing is written until the key
is known to be strong enough for the registry's forgery floor; the marked file is read back
and tested against the key (as parsed from its bytes) before the key file is written; on any
failure no output is left behind.
"""
from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from verifier import forgery
from verifier.owners import arch as _arch
from verifier.owners.errors import OwnerToolError
from verifier.owners.files import ModelFile, load_onnx, read_model, save_onnx, write_model
from verifier.owners.onnx_sign import export_torchscript, sign_onnx
from verifier.owners.output import refuse_existing, write_atomically, write_secret
from verifier.result import TestResult
from verifier.schemes import get

POST_TRAINING = ("lsb", "output_signature", "advparams")


@dataclass
class Marked:
    """What `watermark_file` wrote and measured."""

    scheme: str  # the scheme's registered name
    out: Path  # the marked model
    key_out: Path  # the key file (mode 0600)
    key_blob: bytes  # its bytes
    check: TestResult  # the marked file, read back, tested with the key
    public_params: dict[str, Any]  # what the registry will publish about the key
    notes: list[str] = field(default_factory=list)  # measurements worth printing


def parse_params(scheme: str, pairs: list[str]) -> Any:
    """The scheme's `Params` with `name=value` overrides (values parsed as JSON when they can be).

    Example:
        >>> parse_params("lsb", ["k=2"]).k
        2
    """
    cls = get(scheme).Params
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in names:
            raise OwnerToolError(f"--param {pair!r}: expected NAME=VALUE with NAME one of "
                                 f"{', '.join(sorted(names))}")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise OwnerToolError(f"--param: {e}") from None


def _seed(seed: int | None) -> int | bytes:
    return secrets.token_bytes(32) if seed is None else seed


def _check_strength(key: Any, scheme: str) -> None:
    try:
        forgery.check_key_strength(key.best_log10_p(), scheme)
    except forgery.WeakKeyError as e:
        raise OwnerToolError(f"{e} (raise the key's size with --param)") from None


def _self_check(scheme: str, out: Path, blob: bytes) -> TestResult:
    """Read the written model back and test it with the key parsed from its bytes."""
    module = get(scheme)
    result: TestResult = module.test(read_model(out).loaded.suspect, module.Key.from_bytes(blob))
    if not result.applicable or result.log10_p > forgery.floor_log10_p():
        raise OwnerToolError(
            f"the marked model {out} does not test positive with its own key ({scheme}: "
            f"log10 p = {result.log10_p:.1f}, applicable={result.applicable}); nothing was kept")
    return result


def _finish(scheme: str, out: Path, key_out: Path, key: Any, notes: list[str]) -> Marked:
    blob = key.to_bytes()
    try:
        check = _self_check(scheme, out, blob)
        write_secret(key_out, blob)
    except BaseException:
        _remove(out)
        raise
    return Marked(scheme, out, key_out, blob, check, key.public_params(), notes)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _input_shape(source: ModelFile, given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given:
        return given
    io = source.loaded.details.get("io") or {}
    shape = (io.get("inputs") or [{}])[0].get("shape", [])
    if len(shape) >= 2 and all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return tuple(shape[1:])
    raise OwnerToolError(f"cannot tell the input shape of {source.path} (found {shape}); pass "
                         "--input-shape, e.g. --input-shape 3,224,224 (without the batch)")


def _classes(predict: Any, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        out = predict(torch.zeros(1, *input_shape))
    if out.dim() != 2:
        raise OwnerToolError(f"the model returns outputs of shape {tuple(out.shape)}; the output "
                             "signature needs (N, classes) logits")
    return int(out.shape[1])


def _lsb(source: ModelFile, out: Path, key_out: Path, params: Any, seed: int | bytes) -> Marked:
    lsb = get("lsb")
    weights = source.weights
    key = lsb.generate_key(params, seed, model=weights)
    _check_strength(key, "lsb")
    marked = lsb.embed(weights, key)
    changed = {n: t for n, t in marked.items() if not torch.equal(t, weights[n])}
    write_model(source, marked if source.format != "onnx" else changed, out)
    public = key.public_params()
    return _finish("lsb", out, key_out, key, [
        f"{public.get('positions')} weights in {len(changed)} tensors carry {public.get('k')} "
        "signed low bits each"])


def _output_signature(source: ModelFile, out: Path, key_out: Path, pairs: list[str],
                      seed: int | bytes, arch: str | None,
                      input_shape: tuple[int, ...] | None) -> Marked:
    scheme = get("output_signature")
    if arch is not None:
        module = _arch.build(arch, source.weights)
        if not input_shape:
            raise OwnerToolError("--arch needs --input-shape (without the batch), e.g. "
                                 "--input-shape 64")
        shape = input_shape
        classes = _classes(module, shape)
    else:
        if source.format != "onnx" or not source.loaded.suspect.has_predict:
            raise OwnerToolError(f"{source.path} is {source.format} weights, which cannot run; "
                                 "output_signature wraps a runnable model: pass an ONNX file, or "
                                 "the weights with --arch package.module:factory")
        shape = _input_shape(source, input_shape)
        classes = _classes(source.loaded.suspect.predict, shape)
    params = parse_params("output_signature", [f"input_shape={json.dumps(list(shape))}",
                                               f"classes={classes}", *pairs])
    key = scheme.generate_key(params, seed)
    _check_strength(key, "output_signature")
    if arch is not None:
        wrapped = scheme.embed(module, key).eval()

        def export(target: Path) -> None:
            export_torchscript(wrapped, (torch.zeros(2, *shape),), str(target),
                               input_names=["input"], output_names=["logits"],
                               dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        write_atomically(out, "--out", export)
    else:
        signed = sign_onnx(load_onnx(source.path), key)
        write_atomically(out, "--out", lambda target: save_onnx(signed, target))
    return _finish("output_signature", out, key_out, key, [
        f"{classes} logits per input; the top-1 class never changes, other logits only move "
        f"down (lattice step delta = {params.delta}, docs/schemes-post-training.md)"])


def _load_data(path: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    if path is None:
        raise OwnerToolError("advparams needs labelled data to search on: --data DATA.safetensors "
                             "holding tensors `x` (N, ...) and `y` (N,) int64, e.g. held-out data")
    from verifier.models import ModelFormatError, load_suspect

    try:
        loaded = load_suspect(path)
    except ModelFormatError as e:
        raise OwnerToolError(f"--data {path}: {e}") from None
    if loaded.format != "safetensors":
        raise OwnerToolError(f"--data {path} is {loaded.format}; save it with "
                             "safetensors.torch.save_file({'x': x, 'y': y}, path)")
    tensors = loaded.suspect.weights
    if "x" not in tensors or "y" not in tensors:
        raise OwnerToolError(f"--data {path} holds {sorted(tensors)[:5]}; expected tensors `x` "
                             "(inputs) and `y` (int64 labels)")
    return tensors["x"].clone(), tensors["y"].clone().long()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(dim=1) == y).float().mean())


def _advparams(source: ModelFile, out: Path, key_out: Path, params: Any, seed: int | bytes,
               arch: str | None, data_path: Path | None) -> Marked:
    if arch is None:
        raise OwnerToolError("advparams searches weights by gradient, so it needs the model's "
                             "own torch module: pass --arch package.module:factory (a class or "
                             "function returning the nn.Module the weights load into)")
    if source.format != "safetensors":
        raise OwnerToolError(f"advparams encrypts safetensors weights; {source.path} is "
                             f"{source.format}")
    scheme = get("advparams")
    module = _arch.build(arch, source.weights)
    x, y = _load_data(data_path)
    # the scheme contract: generate_key searches the weights to move, embed moves them
    key = scheme.generate_key(params, seed, model=module, data=(x, y))
    _check_strength(key, "advparams")
    encrypted = scheme.embed(module, key)
    write_model(source, {**source.weights, **encrypted.state_dict()}, out)
    before, after = _accuracy(module, x, y), _accuracy(encrypted, x, y)
    return _finish("advparams", out, key_out, key, [
        f"{key.public_params().get('positions')} weights moved; accuracy on --data {before:.1%} -> {after:.1%} until "
        "decrypted with a licence (hallmark decrypt)"])


def watermark_file(scheme: str, model: Path, out: Path, key_out: Path, *,
                   params: list[str] | None = None, seed: int | None = None,
                   arch: str | None = None, data: Path | None = None,
                   input_shape: tuple[int, ...] | None = None) -> Marked:
    """Mark a model file with a post-training scheme; write the marked model and its key.

    Args:
        scheme: "lsb", "output_signature" or "advparams".
        model: the model file or adapter folder.
        out: where the marked model goes (must not exist).
        key_out: where the key goes, mode 0600 (must not exist).
        params: `name=value` overrides of the scheme's Params.
        seed: an int for a reproducible key (tests); default 32 fresh random bytes.
        arch: `package.module:factory` of the owner's module (output_signature from
            weights, advparams).
        data: labelled data for advparams (safetensors with `x`, `y`).
        input_shape: one input's shape without the batch (output_signature).

    Returns:
        Marked, with the read-back self-check.

    Raises:
        OwnerToolError: an input is refused; nothing is left at `out` or `key_out`.

    Example:
        >>> m = watermark_file("lsb", Path("model.safetensors"), Path("signed.safetensors"),
        ...                    Path("lsb.key"))  # doctest: +SKIP
    """
    if scheme not in POST_TRAINING:
        hint = (" (a training-time scheme: mark while training, see docs/owners.md)"
                if scheme in ("uchida", "trigger_set", "seal") else "")
        raise OwnerToolError(f"`hallmark watermark` applies {', '.join(POST_TRAINING)}; "
                             f"received {scheme!r}{hint}")
    refuse_existing(out, "--out")
    refuse_existing(key_out, "--key-out")
    source = read_model(model)
    pairs = list(params or [])
    try:
        if scheme == "lsb":
            return _lsb(source, out, key_out, parse_params("lsb", pairs), _seed(seed))
        if scheme == "output_signature":
            return _output_signature(source, out, key_out, pairs, _seed(seed), arch, input_shape)
        return _advparams(source, out, key_out, parse_params("advparams", pairs), _seed(seed),
                          arch, data)
    except BaseException as e:
        # both paths were free when we started, so whatever is there now is ours and half done
        if not key_out.exists():
            _remove(out)
        if isinstance(e, ValueError) and not isinstance(e, OwnerToolError):
            # every scheme's typed error (LSBError, OutputSignatureError, …) is a ValueError
            raise OwnerToolError(f"{scheme}: {e}") from None
        raise
