"""ONNX: parsed without external data, external data checked and read by us, float
initializers as weights and an onnxruntime CPU session as predict."""
from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from verifier.models.errors import ModelFormatError, check_size, show
from verifier.models.limits import GiB, LoadLimits
from verifier.models.loaded import LoadedModel
from verifier.models.paths import path_inside, relative_parts
from verifier.suspect import PredictFn, Suspect

_ONNX_PROTOBUF_LIMIT = 2 * GiB - 1  # protobuf cannot hold a message of 2 GB or more
_ONNX_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
_ONNX_FIX = ("keep external data files inside the model's folder and send the folder as a .zip "
             "or .tar (onnx.save_model(model, 'model.onnx', save_as_external_data=True, "
             "location='model.onnx.data'))")


def load_onnx_model(p: Path, folder: Path | None, limits: LoadLimits) -> LoadedModel:
    """An ONNX model: float initializers as weights and an onnxruntime session as predict."""
    model, info = read_onnx_with_info(p, folder, limits)
    weights = onnx_weight_tensors(model)
    predict, io, warnings = onnx_session(model, limits)
    if not weights and predict is None:
        raise ModelFormatError(f"the ONNX model {show(p.name)} has no float weights and "
                               f"onnxruntime cannot run it ({'; '.join(warnings)}); send a "
                               "runnable model")
    details = {**info, "weights": len(weights), "io": io}
    return LoadedModel(Suspect(weights or None, predict, description="onnx model"), "onnx",
                       warnings, details)


def read_onnx(path: Path, data_folder: Path | None = None,
              limits: LoadLimits = LoadLimits()) -> Any:  # noqa: B008 - frozen, shared safely
    """Parse an ONNX file as `load_suspect` does: external data checked and inlined (read only
    from regular files inside `data_folder`), caps applied, onnx.checker passed.

    Args:
        path: the .onnx file.
        data_folder: the model folder its external data may come from (None: refuse any).
        limits: the caps.

    Returns:
        The onnx.ModelProto, with every tensor's data inline.

    Raises:
        ModelFormatError: the file is refused; the message says why and how to fix it.

    Example:
        >>> read_onnx(Path("model.onnx")).graph.node[0].op_type  # doctest: +SKIP
        'Gemm'
    """
    return read_onnx_with_info(path, data_folder, limits)[0]


def read_onnx_with_info(p: Path, folder: Path | None, limits: LoadLimits
                        ) -> tuple[Any, dict[str, Any]]:
    """Parse an ONNX file without external data, then inline its checked external data."""
    import onnx

    what = f"the ONNX model {show(p.name)}"
    size = p.stat().st_size
    check_size(size, min(limits.max_file_bytes, _ONNX_PROTOBUF_LIMIT), what)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others; all mean "not ONNX"
        raise ModelFormatError(f"{what} is not a valid ONNX model ({type(e).__name__}); export "
                               "it with torch.onnx.export") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelFormatError(f"{what} parses but has no graph nodes, so it is not an ONNX "
                               "model; export it with torch.onnx.export")
    try:
        tensors = list(_onnx_tensors(model))
    except RecursionError:
        raise ModelFormatError(f"{what} nests subgraphs too deeply; simplify the model") from None
    if len(tensors) > limits.max_tensors:
        raise ModelFormatError(f"{what} holds {len(tensors)} tensors, over the cap of "
                               f"{limits.max_tensors}")
    external = _inline_external_data(tensors, folder, limits, what)
    total = model.ByteSize()
    if total > limits.max_total_tensor_bytes or total > _ONNX_PROTOBUF_LIMIT:
        raise ModelFormatError(f"{what} is {total} bytes with its external data, over the cap of "
                               f"{min(limits.max_total_tensor_bytes, _ONNX_PROTOBUF_LIMIT)} bytes "
                               "(models of 2 GB or more cannot run in memory)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # onnx.checker.ValidationError and protobuf errors
        raise ModelFormatError(f"{what} fails onnx.checker ({show(str(e), 200)}); re-export "
                               "it with torch.onnx.export") from None
    info = {"bytes": size, "external_data_bytes": external, "ir_version": int(model.ir_version),
            "opsets": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip()[:100]}
    return model, info


def _onnx_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse tensors, node attributes, subgraphs."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for a in node.attribute:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        sparse = ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors)
        for s in sparse:
            yield from (s.values, s.indices)
        if a.HasField("g"):
            yield from _graph_tensors(a.g)
        for g in a.graphs:
            yield from _graph_tensors(g)


def _inline_external_data(tensors: list[Any], folder: Path | None, limits: LoadLimits,
                          what: str) -> int:
    """Replace every external data reference by the checked bytes; returns the bytes read."""
    import onnx

    total = 0
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            if len(t.external_data):
                raise ModelFormatError(f"{what}: tensor {show(t.name)} lists external data but "
                                       f"is not marked external; {_ONNX_FIX}")
            continue
        fields = [(e.key, e.value) for e in t.external_data]
        keys = [k for k, _ in fields]
        if len(set(keys)) != len(keys) or not set(keys) <= _ONNX_EXTERNAL_KEYS:
            raise ModelFormatError(f"{what}: tensor {show(t.name)} has external data fields "
                                   f"{show(keys)}; only location, offset, length and checksum "
                                   f"are allowed; {_ONNX_FIX}")
        info = dict(fields)
        location = info.get("location", "")
        if folder is None:
            raise ModelFormatError(
                f"{what} uses external data ({show(location)} for tensor {show(t.name)}) but "
                "was received as a single file: send the model folder as a .zip or .tar, or save "
                "the model without external data (onnx.save_model(model, path, "
                "save_as_external_data=False)) when it is under 2 GB")
        data = _read_external(folder, location, info, t, limits, what)
        total += len(data)
        if total > limits.max_total_tensor_bytes:
            raise ModelFormatError(f"{what}: external data exceeds the cap of "
                                   f"{limits.max_total_tensor_bytes} bytes")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
    return total


def _read_external(folder: Path, location: str, info: Mapping[str, str], t: Any,
                   limits: LoadLimits, what: str) -> bytes:
    """The bytes of one external data reference, read only from a regular file inside `folder`."""
    from onnx import helper

    where = f"{what}: external data location {show(location)} of tensor {show(t.name)}"
    parts = relative_parts(location, where, _ONNX_FIX, limits.max_path_depth)
    path = path_inside(folder, parts, where, _ONNX_FIX)
    offset = _nonneg_int(info.get("offset", "0"), f"{where} has offset", _ONNX_FIX)
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        raise ModelFormatError(f"{where}: tensor type {t.data_type} cannot be stored as external "
                               f"data; {_ONNX_FIX}") from None
    expected = math.prod(t.dims) * itemsize
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise ModelFormatError(f"{where} is not a plain file (a hardlink or special file); "
                                   f"{_ONNX_FIX}")
        check_size(st.st_size, limits.max_file_bytes, where)
        length = _nonneg_int(info.get("length", str(max(0, st.st_size - offset))),
                             f"{where} has length", _ONNX_FIX)
        if offset + length > st.st_size:
            raise ModelFormatError(f"{where} asks for bytes {offset}-{offset + length} of a "
                                   f"{st.st_size}-byte file; {_ONNX_FIX}")
        if length != expected:
            raise ModelFormatError(f"{where} is {length} bytes but the tensor's type and shape "
                                   f"need {expected}; {_ONNX_FIX}")
        return os.pread(fd, length, offset) if length else b""
    finally:
        os.close(fd)


def onnx_weight_tensors(model: Any) -> dict[str, torch.Tensor]:
    """Float initializers as named tensors (names as exported: torch.onnx.export keeps
    parameter names such as "fc1.weight"; integer shape constants are left out)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    floats = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    out: dict[str, torch.Tensor] = {}
    for init in model.graph.initializer:
        if init.data_type not in floats or not init.name:
            continue
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.BFLOAT16:
            arr = arr.astype(np.float32)
        out[init.name] = torch.from_numpy(np.array(arr, copy=True))
    return out


def onnx_session(model: Any, limits: LoadLimits
                 ) -> tuple[PredictFn | None, dict[str, Any], list[str]]:
    """An onnxruntime CPU session as a predict function, or (None, …, [why]) if it cannot run."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = limits.onnx_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        return None, {}, [f"onnxruntime cannot load the model ({show(str(e), 200)}); only "
                          "white-box checks apply"]
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    io = {"inputs": [{"name": i.name[:100], "type": i.type, "shape": _dims(i.shape)} for i in inputs],
          "outputs": [{"name": o.name[:100], "type": o.type, "shape": _dims(o.shape)}
                      for o in outputs]}
    if len(inputs) != 1 or inputs[0].type not in _ORT_FLOAT_INPUTS:
        return None, io, [f"the ONNX model takes {len(inputs)} input(s) of type "
                          f"{inputs[0].type if inputs else 'none'}; black-box checks need one "
                          "float tensor input, so only white-box checks apply"]
    return _OrtPredict(sess, inputs[0], outputs[0].name), io, []


_ORT_FLOAT_INPUTS = {"tensor(float)": "float32", "tensor(double)": "float64",
                     "tensor(float16)": "float16"}


class _OrtPredict:
    """Batch predict through an onnxruntime session: (N, ...) inputs -> (N, C) float32 logits.

    Inputs are reshaped to the model's static trailing dimensions when the element counts
    match (e.g. (N, 64) -> (N, 1, 8, 8)); a model exported with a fixed batch size b is run
    in chunks of b, the last chunk zero-padded and the padding dropped.
    """

    def __init__(self, sess: Any, inp: Any, out_name: str) -> None:
        self.sess, self.in_name, self.out_name = sess, inp.name, out_name
        self.dtype = _ORT_FLOAT_INPUTS[inp.type]
        shape = list(inp.shape)
        self.batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
        trailing = shape[1:]
        self.trailing = trailing if all(isinstance(d, int) and d > 0 for d in trailing) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        n = int(x.shape[0])
        arr = x.detach().cpu().numpy().astype(self.dtype)  # (N, ...)
        if self.trailing is not None and arr[0:1].size == math.prod(self.trailing):
            arr = arr.reshape(n, *self.trailing)
        if self.batch is None:
            out = self._run(arr)
        else:
            chunks = []
            for i in range(0, n, self.batch):
                part = arr[i:i + self.batch]
                pad = self.batch - part.shape[0]
                if pad:
                    part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
                chunks.append(self._run(part)[:self.batch - pad])
            out = np.concatenate(chunks)
        if out.shape[0] != n:
            raise ModelFormatError(f"the ONNX model returned {out.shape[0]} rows for {n} inputs; "
                                   "export it with a dynamic batch dimension")
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(n, -1)

    def _run(self, arr: Any) -> Any:
        import numpy as np

        return np.asarray(self.sess.run([self.out_name], {self.in_name: arr})[0])


def _dims(shape: Any) -> list[Any]:
    return [d if isinstance(d, int) else str(d)[:40] for d in list(shape or [])]


def _nonneg_int(text: str, what: str, fix: str) -> int:
    if not re.fullmatch(r"[0-9]{1,20}", text or ""):
        raise ModelFormatError(f"{what} {show(text)}, not a non-negative integer; {fix}")
    return int(text)
