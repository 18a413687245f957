"""Range reads vs a full download: a uchida key verified on a >= 10 GB sharded Hub repo.

    python -m bench.hub [--quick]

Builds a sharded safetensors repo under /tmp/hubbench (sparse files: the first shard holds the
owner's marked toy MLP — the key's host layers — and every shard a multi-GB zero-filled filler
tensor), serves it from the loopback Hub + CDN of tests/hubserver.py, and verifies the marked
model's uchida key twice, each time with an empty per-host cache:
- **range reads** (the default path): the index, every shard's header, then only the byte ranges
  of the tensors the key reads, each through the guarded fetcher (resolve → 302 → CDN);
- **full download** (`HALLMARK_HUB_FULL_DOWNLOAD=1`): every shard downloaded whole through the
  same guarded code into the cache, then the same key verified on the local files.
Both are timed in a warm process (huggingface_hub imported, as in a running worker; the
first lookup's cost is reported apart as `first_resolve_seconds`). Prints both side by side
(bytes read, seconds) with the goals (bytes <= 1 %, time <= 5 %), and writes
bench/results/hub.json. Deletes /tmp/hubbench when done.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any

from bench.machine import machine

RESULTS = Path(__file__).resolve().parent / "results" / "hub.json"
ROOT = Path("/tmp/hubbench")
REPO = "bench/sharded"


def _write_shard(path: Path, real: dict[str, Any], filler_bytes: int) -> None:
    """A safetensors file: the real tensors' bytes, then a sparse zero-filled F32 filler."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, pos = [], 0
    for name, t in sorted(real.items()):
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    n = filler_bytes // 4
    header[f"{path.stem}.filler"] = {"dtype": "F32", "shape": [n], "data_offsets": [pos, pos + 4 * n]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for b in blobs:
            f.write(b)
        f.truncate(8 + len(raw) + pos + 4 * n)  # sparse: the filler reads as zeros


def _build(total_bytes: int, shards: int) -> tuple[Path, bytes]:
    from registry.demo import train_marked_model

    marked = train_marked_model(seed=0)
    folder = ROOT / "hub" / REPO
    folder.mkdir(parents=True)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    state = {k: v.detach().float() for k, v in marked.model.state_dict().items()}
    weight_map = {}
    for i, name in enumerate(names):
        real = state if i == 0 else {}
        _write_shard(folder / name, real, math.ceil(total_bytes / shards / 4) * 4)
        weight_map.update({k: name for k in real} | {f"{Path(name).stem}.filler": name})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}))
    return folder, marked.keys["uchida"]


def _verify(hub: Any, key_blob: bytes, cache: Path, full: bool) -> dict[str, Any]:
    from registry.hubrefs import HubRef
    from verifier import Suspect
    from verifier.models.ranged import RangedTensors, read_header
    from verifier.schemes import uchida
    from workers.hub.snapshot import plan, resolve
    from workers.hub.store import HubStore
    from workers.netguard import FetchPolicy

    policy = FetchPolicy(allow_loopback=True, max_bytes=1 << 40, timeout_seconds=3600)
    hub.reset_counters()
    t0 = time.perf_counter()
    snap = resolve(HubRef(REPO, "main", ""), hub.endpoint, None, policy)
    store = HubStore(snap, cache, hub.endpoint, None, policy, full_download=full)
    p = plan(snap, HubRef(REPO, "main", ""))
    assert p.index is not None
    index = json.loads(store.whole(p.index).read_bytes())
    shards = [snap.file(n) for n in sorted(set(index["weight_map"].values()))]
    if full:
        for f in shards:
            store.whole(f)
    weights = RangedTensors([read_header(f.name, f.size, store.read) for f in shards], store.read)
    result = uchida.test(Suspect.from_weights(weights), uchida.Key.from_bytes(key_blob))
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "bytes_read": hub.bytes_served,
            "log10_p": round(result.log10_p, 2), "attributed_at_2^-80": result.log10_p < -24.08,
            "tensors_read": sorted(weights.evidence()["tensors"])}


def _warm_up(hub: Any) -> float:
    """Seconds of the process's first revision lookup (importing huggingface_hub, its client)."""
    from registry.hubrefs import HubRef
    from workers.hub.snapshot import resolve
    from workers.netguard import FetchPolicy

    t0 = time.perf_counter()
    resolve(HubRef(REPO, "main", ""), hub.endpoint, None, FetchPolicy(allow_loopback=True))
    return round(time.perf_counter() - t0, 3)


def run(quick: bool = False) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings")
    import django

    django.setup()  # workers.hub reads the registry's models and settings
    from tests.hubserver import HubServer

    total = (1 << 30) if quick else 10_500_000_000  # > 10 GB (decimal) of tensors
    shards = 2 if quick else 5
    shutil.rmtree(ROOT, ignore_errors=True)
    try:
        folder, key = _build(total, shards)
        repo_bytes = sum(p.stat().st_size for p in folder.iterdir())
        with HubServer(ROOT / "hub", hash_files=False) as hub:
            cold = _warm_up(hub)  # a worker imports huggingface_hub once, not per verification
            ranged = _verify(hub, key, ROOT / "cache-ranged", full=False)
            full = _verify(hub, key, ROOT / "cache-full", full=True)
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    out = {"repo_bytes": repo_bytes, "shards": shards, "first_resolve_seconds": cold,
           "range_reads": ranged,
           "full_download": full,
           "bytes_fraction": round(ranged["bytes_read"] / repo_bytes, 6),
           "time_fraction": round(ranged["seconds"] / full["seconds"], 4),
           "goals": {"bytes_fraction_max": 0.01, "time_fraction_max": 0.05}}
    out["goals_met"] = (out["bytes_fraction"] <= 0.01 and out["time_fraction"] <= 0.05
                        and ranged["log10_p"] == full["log10_p"])
    return out


def report(out: dict[str, Any]) -> str:
    r, f = out["range_reads"], out["full_download"]
    return "\n".join([
        f"uchida key on a {out['repo_bytes'] / 1e9:.2f} GB repo of {out['shards']} shards:",
        f"  {'':14}{'bytes read':>16}{'seconds':>10}{'log10 p':>10}",
        f"  {'range reads':14}{r['bytes_read']:>16,}{r['seconds']:>10.2f}{r['log10_p']:>10}",
        f"  {'full download':14}{f['bytes_read']:>16,}{f['seconds']:>10.2f}{f['log10_p']:>10}",
        f"  range reads read {100 * out['bytes_fraction']:.4f} % of the bytes (goal <= 1 %) in "
        f"{100 * out['time_fraction']:.2f} % of the time (goal <= 5 %): "
        + ("goals met" if out["goals_met"] else "GOALS NOT MET")])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hub")
    parser.add_argument("--quick", action="store_true", help="a 1 GiB repo, for a smoke run")
    args = parser.parse_args()
    out = {"machine": machine(), **run(args.quick)}
    print(report(out))
    if not args.quick:
        RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
