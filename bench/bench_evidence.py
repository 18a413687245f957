"""Evidence benchmarks: Merkle proofs at 1,000,000 entries and the offline audit of a report.

Pure and in memory: the node table is a list of hashes per level, read through the same
`get_nodes(coords)` callback the registry serves from its database. Measures, at n = 1e6:
root, inclusion proof generation + verification, consistency proof generation + verification;
then `verifier.audit.audit` on a canonical report (no recomputation). Prints JSON and writes
bench/results/evidence.json. Targets: each proof < 10 ms, audit < 100 ms.

    python -m bench.bench_evidence [--entries N] [--samples K]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from verifier.evidence import merkle


class LevelTable:
    """Stored perfect-subtree hashes as one list per level: (level, index) -> hash."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = []
        self.size = 0

    def get_nodes(self, coords: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {(lvl, i): self.levels[lvl][i] for lvl, i in coords}

    def append(self, entry: bytes) -> None:
        for lvl, i, h in merkle.nodes_completed_by_append(self.size, merkle.leaf_hash(entry),
                                                          self.get_nodes):
            if lvl == len(self.levels):
                self.levels.append([])
            assert len(self.levels[lvl]) == i
            self.levels[lvl].append(h)
        self.size += 1


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1e3, 4),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3, 4),
            "max_ms": round(ordered[-1] * 1e3, 4)}


def _timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run(entries: int = 1_000_000, samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Build a log of `entries` entries in memory and time proofs and audits on it."""
    rng = random.Random(seed)
    table = LevelTable()
    t0 = time.perf_counter()
    for i in range(entries):
        table.append(b"entry %d" % i)
    build_s = time.perf_counter() - t0
    n = entries
    root, root_s = _timed(lambda: merkle.root_at(n, table.get_nodes))

    incl_gen, incl_ver, incl_len = [], [], []
    for _ in range(samples):
        i = rng.randrange(n)
        proof, dt = _timed(lambda i=i: merkle.inclusion_proof(i, n, table.get_nodes))
        incl_gen.append(dt)
        ok, dt = _timed(lambda i=i, proof=proof: merkle.verify_inclusion(
            merkle.leaf_hash(b"entry %d" % i), i, n, proof, root))
        assert ok
        incl_ver.append(dt)
        incl_len.append(len(proof))

    cons_gen, cons_ver, cons_len = [], [], []
    roots: dict[int, bytes] = {}
    for _ in range(samples):
        m = rng.randrange(1, n)
        old_root = roots.setdefault(m, merkle.root_at(m, table.get_nodes))
        proof, dt = _timed(lambda m=m: merkle.consistency_proof(m, n, table.get_nodes))
        cons_gen.append(dt)
        ok, dt = _timed(lambda m=m, proof=proof, old_root=old_root: merkle.verify_consistency(
            m, n, old_root, root, proof))
        assert ok
        cons_ver.append(dt)
        cons_len.append(len(proof))

    return {"entries": n, "build_s": round(build_s, 2),
            "appends_per_s_in_memory": round(n / build_s),
            "root_ms": round(root_s * 1e3, 4),
            "inclusion": {"generate": _ms(incl_gen), "verify": _ms(incl_ver),
                          "generate_plus_verify": _ms([a + b for a, b in zip(incl_gen, incl_ver, strict=True)]),
                          "max_hashes": max(incl_len)},
            "consistency": {"generate": _ms(cons_gen), "verify": _ms(cons_ver),
                            "generate_plus_verify": _ms([a + b for a, b in zip(cons_gen, cons_ver, strict=True)]),
                            "max_hashes": max(cons_len)},
            "audit": _audit_times(samples)}


def _audit_times(samples: int) -> dict[str, Any]:
    """Time `audit` on a canonical report with two signatures and a proof in a 1,000-entry log."""
    from verifier.audit import audit
    from verifier.evidence import report as R
    from verifier.evidence.identity import Identity
    from verifier.evidence.logentry import log_entry, report_entry
    from verifier.evidence.note import sign_checkpoint
    from verifier.evidence.proofbundle import make_bundle
    from verifier.result import TestResult
    from verifier.stats import holm

    registry, owner = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    origin, log = "hallmark.bench/log", merkle.MemoryLog(keep_entries=False)
    for i in range(1000):
        log.append(log_entry("correction", corrects=i, envelope_sha256="ab" * 32))
    results = [TestResult.from_log10_p("uchida", 250, 256, -70.0, "exact"),
               TestResult.from_log10_p("trigger_set", 98, 100, -90.0, "exact")]
    decisions = holm([r.log10_p for r in results], 1e-6)
    digests = ["a1" * 32, "b2" * 32]
    checks = [R.check_entry(r, commitment=c, model="m", owner_keyid=owner.keyid, alpha=d.alpha,
                            decision="attributed")
              for r, c, d in zip(results, digests, decisions, strict=True)]
    pred = R.verification_predicate(
        verification="bench", registry_origin=origin, registry_public_key=registry.public_key,
        owners=[R.owner_entry(owner.public_key)], alpha=1e-6, checks=checks,
        verdict={"attributed": True},
        times={"submitted": "2026-01-01T00:00:00Z", "fetched": "2026-01-01T00:00:01Z",
               "finished": "2026-01-01T00:00:05Z", "signed": "2026-01-01T00:00:06Z"},
        commitments=[R.commitment_ref(c, r.scheme, i, "2025-12-01T00:00:00Z")
                     for i, (c, r) in enumerate(zip(digests, results, strict=True))])
    envelope = R.sign_report(R.report_statement("suspect.onnx", "cd" * 32, pred), [registry, owner])
    index = log.append(report_entry(envelope))
    bundle = make_bundle(index, log.inclusion_proof(index),
                         sign_checkpoint(origin, log.size, log.root(), registry))
    raw = R.render_report(R.assemble_report(envelope, log_index=index, bundle=bundle,
                                            origin=origin, registry_public_key=registry.public_key))
    times = []
    for _ in range(samples):
        res, dt = _timed(lambda: audit(raw, registry_key=registry.public_key))
        assert res.ok, res.failure
        times.append(dt)
    return {"report_bytes": len(raw), **_ms(times)}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "evidence.json"))
    args = parser.parse_args()
    out: dict[str, Any] = {"benchmark": "evidence", **run(args.entries, args.samples)}
    try:
        from bench.machine import machine

        out["machine"] = machine()
    except ImportError:
        pass
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
