"""Witness benchmark: add-checkpoint over HTTP on 127.0.0.1, each with a consistency proof.

A log grows by `step` entries between checkpoints (at about 1,000,000 entries, so proofs are
~20 hashes); each checkpoint is sent with the proof from the previous one, over one process's
keep-alive-less urllib requests (what the registry does). Measures the round trip (parse,
verify the log signature and the proof, fsync'd state write, cosign) and the time to verify a
cosignature. Prints JSON and writes bench/results/witness.json.

    python -m bench.witness [--checkpoints N] [--start SIZE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from verifier.evidence.cosignature import Witness as WitnessKey
from verifier.evidence.cosignature import verify_cosignatures
from verifier.evidence.identity import Identity
from verifier.evidence.merkle import MemoryLog
from verifier.evidence.note import sign_checkpoint
from verifier.witness.client import add_checkpoint
from verifier.witness.protocol import Witness
from verifier.witness.server import make_server
from verifier.witness.state import WitnessState

RESULTS = Path(__file__).resolve().parent / "results" / "witness.json"


def _ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_ms": round(statistics.median(s) * 1e3, 3),
            "p99_ms": round(s[int(0.99 * (len(s) - 1))] * 1e3, 3)}


def run(checkpoints: int = 300, start: int = 1 << 20, step: int = 7) -> dict[str, Any]:
    log_key, w_key = Identity.from_seed(bytes([1]) * 32), Identity.from_seed(bytes([2]) * 32)
    me = WitnessKey("bench.test/w", w_key.public_key)
    log = MemoryLog(keep_entries=False)
    for i in range(start):
        log.append(b"%d" % i)
    with tempfile.TemporaryDirectory() as tmp:
        server = make_server(Witness(me.name, w_key, {"bench.test/log": [log_key.public_key]},
                                     WitnessState(Path(tmp) / "state.json")))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        old, rtt, verify = 0, [], []
        try:
            for _ in range(checkpoints):
                note = sign_checkpoint("bench.test/log", log.size, log.root(), log_key)
                proof = log.consistency_proof(old) if old else []
                t0 = time.perf_counter()
                line = add_checkpoint(url, me, old, proof, note)
                rtt.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                verify_cosignatures(note + line, [me])
                verify.append(time.perf_counter() - t0)
                old = log.size
                for i in range(step):
                    log.append(b"more %d %d" % (old, i))
        finally:
            server.shutdown()
            server.server_close()
    return {"log_size": start, "checkpoints": checkpoints, "entries_between": step,
            "add_checkpoint_round_trip": _ms(rtt),
            "per_second_one_client": round(len(rtt) / sum(rtt), 1),
            "verify_cosignature": _ms(verify)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.witness")
    parser.add_argument("--checkpoints", type=int, default=300)
    parser.add_argument("--start", type=int, default=1 << 20)
    args = parser.parse_args()
    out = run(args.checkpoints, args.start)
    text = json.dumps(out, indent=1)
    print(text)
    RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
