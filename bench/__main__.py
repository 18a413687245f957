"""`make bench`: every benchmark, written to bench/results/bench.json with the machine it ran on.

    python -m bench [--quick]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench import bench_evidence, drain, extraction, hub, log_append, perf, scan
from bench.machine import machine

RESULTS = Path(__file__).resolve().parent / "results" / "bench.json"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    n = 20_000 if args.quick else 1_000_000
    perf.preflight()  # before the long runs: the perf ratios need wrk
    t0 = time.perf_counter()
    out = {
        "machine": machine(),
        "evidence_in_memory": bench_evidence.run(entries=n),
        "log_postgresql": log_append.run(entries=500 if args.quick else 3000, million=n),
        "uchida_extraction": extraction.run(),
        # a private PostgreSQL + Redis + worker processes (bench.stack), not DATABASE_URL's;
        # the burst is queued first, so 200 drain in ~5-10 s here (a longer drain: less noise)
        "drain_1_vs_2_workers": drain.run(verifications=60 if args.quick else 200,
                                          rounds=1 if args.quick else 3),
        # issue 16: checks, API and hashing as ratios against same-run references
        "perf": perf.run(quick=args.quick),
        # a >= 10 GB sharded repo (sparse, under /tmp/hubbench) on the loopback Hub + CDN
        "hub_range_reads": hub.run(quick=args.quick),
        # registry scans of N uchida commitments on a 1M-weight layer, one worker process
        "scan": scan.run(sizes=(100, 1_000) if args.quick else (100, 1_000, 10_000)),
    }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=1)
    print(text)
    d = out["drain_1_vs_2_workers"]
    print(f"drain of {d['verifications']} verifications: 2 worker processes are "
          f"{d['ratio_1_to_2']}x faster than 1 (goal 1.8x)")
    f = out["scan"]["fit_end_to_end"]
    print("scan (1 worker process): " + ", ".join(
        f"N = {r['n']:,}: {r['commitments_per_second']}/s" for r in out["scan"]["sizes"])
        + f"; seconds = {f['a_seconds']} + {f['b_seconds_per_commitment']} × N")
    print("\n".join(perf.summary(out["perf"])))
    print(hub.report(out["hub_range_reads"]))
    if not args.quick:
        RESULTS.write_text(text + "\n")
        for module, key in ((scan, "scan"), (perf, "perf"), (hub, "hub_range_reads")):
            module.RESULTS.write_text(json.dumps({"machine": out["machine"], **out[key]},
                                                 indent=1) + "\n")


if __name__ == "__main__":
    main()
