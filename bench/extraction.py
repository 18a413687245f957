"""Cost of one `uchida` key's extraction from a 1M-weight layer (a registry scan tests
thousands of keys against one suspect, so this is per key, X regenerated from the seed).

Three layers of about 1M weights: a dense 1000×1000 matrix (host vector averaged over output
rows: 1,000 values), a 4-filter 3×3 conv (host 250,002 values) and a 1-filter conv whose host
vector is the whole 1M weights (the worst case for the projection).
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from verifier.schemes import uchida

SHAPES = {"dense 1000x1000": (1000, 1000), "conv 4x27778x3x3": (4, 27778, 3, 3),
          "conv 1x111112x3x3": (1, 111112, 3, 3)}


def _one(shape: tuple[int, ...], bits: int, keys: int) -> dict[str, Any]:
    layer = {"w": torch.randn(shape)}
    times = []
    for seed in range(keys):
        key = uchida.generate_key(uchida.Params(bits=bits, layers=("w",), shapes=(shape,)), seed)
        t0 = time.perf_counter()
        uchida.extract(layer, key)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"weights": layer["w"].numel(), "host_size": key.host_size,
            "median_ms": round(statistics.median(times) * 1e3, 3),
            "p95_ms": round(times[int(0.95 * (keys - 1))] * 1e3, 3)}


def run(bits: int = 256, keys: int = 50) -> dict[str, Any]:
    torch.set_num_threads(1)
    return {"bits": bits, "keys": keys, "threads": 1,
            "layers": {name: _one(shape, bits, keys) for name, shape in SHAPES.items()}}
