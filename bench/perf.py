"""Performance near the read bound (issue 16): each measurement as a ratio against a reference
measured in the same run, interleaved, medians (the machine is shared: single runs are noisy).

- checks: all applicable white-box checks (uchida + lsb) on a float32 model of 4096×4096 layers,
  from `load_suspect` to both results, against `safetensors.torch.load_file` + one SHA-256 pass
  over every weight's bytes (the floor for a set of checks that digests all weights, as lsb
  does); each side in a fresh process, which also gives its peak RSS.
- api: GET /api/reports/<id> (a report of 10 checks) and GET /api/log/checkpoint on gunicorn
  -w 2 at c = 32, against a bare DRF view on the same server (bench.api_site).
- hashing: the fetch path (workers.fetcher over loopback, cache write included) against hashlib
  on one thread; sharded local re-hashing against model-signing 1.1.1's shard mode.

    python -m bench.perf [--only checks,api,hashing] [--params 1e9] [--quick]

Large files go under /tmp/perfbench and are deleted afterwards.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "perf.json"
SCRATCH = Path(os.environ.get("HALLMARK_PERFBENCH_DIR", "/tmp/perfbench"))
SIDE = 4096  # layers are SIDE×SIDE float32
UCHIDA_SEED, LSB_SEED = 5, 7


def say(msg: str) -> None:
    print(f"[perf] {msg}", file=sys.stderr, flush=True)


# --- white-box checks ----------------------------------------------------------------------


def write_model(path: Path, layers: int) -> int:
    """A safetensors file of `layers` SIDE×SIDE float32 layers (N(0, 0.02)), written layer by
    layer so the writer never holds the model; returns its size in bytes."""
    import torch

    nbytes = SIDE * SIDE * 4
    header = {f"layer.{i:03d}.weight": {"dtype": "F32", "shape": [SIDE, SIDE],
                                        "data_offsets": [i * nbytes, (i + 1) * nbytes]}
              for i in range(layers)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    g = torch.Generator().manual_seed(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _ in range(layers):
            f.write((torch.randn(SIDE, SIDE, generator=g) * 0.02).numpy().tobytes())
    return path.stat().st_size


def _keys(folder: Path) -> tuple[Any, Any]:
    from verifier.schemes import lsb, uchida

    ukey = uchida.generate_key(uchida.Params(bits=256, layers=("layer.000.weight",),
                                             shapes=((SIDE, SIDE),)), seed=UCHIDA_SEED)
    lkey = lsb.Key.from_bytes((folder / "lsb.key").read_bytes())
    return ukey, lkey


def _child_checks(kind: str, path: str) -> dict[str, Any]:
    """One measurement in this (fresh) process: seconds and peak RSS."""
    import torch

    folder = Path(path).parent
    if kind == "hallmark":
        from verifier.models import load_suspect
        from verifier.schemes import lsb, uchida

        ukey, lkey = _keys(folder)
        t0 = time.perf_counter()
        loaded = load_suspect(path)
        u = uchida.test(loaded.suspect.fresh(), ukey)
        t1 = time.perf_counter()
        r = lsb.test(loaded.suspect.fresh(), lkey)
        t2 = time.perf_counter()
        assert u.applicable and r.applicable and r.details["masked_digest_match"]
        out = {"seconds": t2 - t0, "uchida_seconds": t1 - t0, "lsb_seconds": t2 - t1,
               "warnings": len(loaded.warnings)}
    else:
        from safetensors.torch import load_file

        t0 = time.perf_counter()
        h = hashlib.sha256()
        for t in load_file(path).values():
            h.update(t.contiguous().view(torch.uint8).numpy().data)
        out = {"seconds": time.perf_counter() - t0}
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def _spawn(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.perf", *args], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode:
        raise RuntimeError(f"bench.perf {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def checks(params: float, rounds: int) -> dict[str, Any]:
    """White-box checks on a model of about `params` parameters vs load + SHA-256."""
    from verifier.models import load_suspect
    from verifier.schemes import lsb

    layers = max(1, round(params / (SIDE * SIDE)))
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / "model.safetensors"
    say(f"writing {layers} layers of {SIDE}x{SIDE} float32 to {path}")
    size = write_model(path, layers)
    try:
        key = lsb.generate_key(lsb.Params(), LSB_SEED, model=load_suspect(path).suspect.weights)
        (SCRATCH / "lsb.key").write_bytes(key.to_bytes())
        runs: dict[str, list[dict[str, Any]]] = {"reference": [], "hallmark": []}
        for i in range(rounds):  # interleaved
            for kind in ("reference", "hallmark"):
                runs[kind].append(_spawn("_checks", kind, str(path)))
                say(f"checks round {i + 1} {kind}: {runs[kind][-1]['seconds']:.2f} s")
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)

    def med(kind: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[kind])

    ref, ours = med("reference", "seconds"), med("hallmark", "seconds")
    # each round's pair ran back to back: the median of per-round ratios cancels most of the
    # load other processes put on the machine between rounds
    ratio = statistics.median(h["seconds"] / r["seconds"]
                              for r, h in zip(runs["reference"], runs["hallmark"], strict=True))
    return {"parameters": layers * SIDE * SIDE, "file_bytes": size, "rounds": rounds,
            "reference_seconds": round(ref, 3), "hallmark_seconds": round(ours, 3),
            "uchida_seconds": round(med("hallmark", "uchida_seconds"), 3),
            "lsb_seconds": round(med("hallmark", "lsb_seconds"), 3),
            "ratio": round(ratio, 2), "goal_ratio": 1.5, "load_average": os.getloadavg(),
            "peak_rss_over_file": round(med("hallmark", "peak_rss_bytes") / size, 3),
            "reference_peak_rss_over_file": round(med("reference", "peak_rss_bytes") / size, 3),
            "goal_rss": 1.2, "runs": runs}


# --- main ----------------------------------------------------------------------------------


PARTS = ("checks", "api", "hashing")


def preflight(only: tuple[str, ...] = PARTS) -> None:
    """Fail before any measurement when a tool a part needs is missing.

    Raises:
        RuntimeError: naming the tool and how to install it.
    """
    if "api" in only and shutil.which("wrk") is None:
        raise RuntimeError("the API benchmark (bench.perf_api) needs wrk, the HTTP load "
                           "generator: apt-get install wrk (or run with --only checks,hashing)")


def run(quick: bool = False, only: tuple[str, ...] = PARTS, params: float | None = None
        ) -> dict[str, Any]:
    """Every part asked for, as a dict of results (also what `make bench` records)."""
    preflight(only)
    out: dict[str, Any] = {}
    if "checks" in only:
        out["checks"] = checks(params or (1e8 if quick else 1e9), 1 if quick else 3)
    if "api" in only:
        from bench import perf_api

        out["api"] = perf_api.run(seconds=3 if quick else 8, rounds=1 if quick else 3)
    if "hashing" in only:
        from bench import perf_hash

        out["hashing"] = perf_hash.run(gib=0.25 if quick else 1.0, rounds=1 if quick else 3)
    return out


def summary(out: dict[str, Any]) -> list[str]:
    """One line per goal: the ratio against its same-run reference, and the goal."""
    lines = []
    if "checks" in out:
        c = out["checks"]
        lines.append(f"white-box checks, {c['parameters'] / 1e9:.2f}B params: {c['ratio']}x of "
                     f"load + SHA-256 (goal <= {c['goal_ratio']}x); peak RSS "
                     f"{c['peak_rss_over_file']}x the file (goal <= {c['goal_rss']}x)")
    for line in out.get("api", {}).get("summary", []):
        lines.append(line)
    for line in out.get("hashing", {}).get("summary", []):
        lines.append(line)
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_checks":
        print(json.dumps(_child_checks(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.perf")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--params", type=float, default=None, help="model size for `checks`")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round")
    args = parser.parse_args()
    only = tuple(p for p in args.only.split(",") if p)
    unknown = set(only) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    from bench.machine import machine

    out = {"machine": machine(), **run(args.quick, only, args.params)}
    print("\n".join(summary(out)))
    if not args.quick:
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        RESULTS.write_text(json.dumps({**old, **out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
