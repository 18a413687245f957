"""Owners' tools end to end, as an owner runs them: `hallmark login`, `watermark` (each
post-training scheme), `register` and `submit` as subprocesses against a live registry on
PostgreSQL, Redis and a real celery worker."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import verifier
from verifier import toy
from verifier.owners.onnx_sign import export_torchscript

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(verifier.__file__).resolve().parents[1]


def _hallmark(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "verifier.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=600, cwd=env["HOME"])
    assert done.returncode == 0, f"hallmark {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _predicate(report: Path) -> dict:
    doc = json.loads(report.read_text())
    return json.loads(base64.b64decode(doc["envelope"]["payload"]))["predicate"]


@pytest.fixture(scope="module")
def owner_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The owner's trained model as safetensors and ONNX, and held-out data for AdvParams."""
    folder = tmp_path_factory.mktemp("owner")
    split = toy.digits()
    torch.manual_seed(0)
    model = toy.train_digits(toy.MLP(), split, epochs=8).eval()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    save_file({"x": split.x_held, "y": split.y_held}, str(folder / "held.safetensors"))
    export_torchscript(model, (torch.zeros(2, 64),), str(folder / "model.onnx"),
                       input_names=["input"], output_names=["logits"],
                       dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return folder


def test_an_owner_marks_registers_and_gets_attributed_reports_from_the_command_line(
        celery_worker, file_server, live_server, owner_files, tmp_path):
    base, served = file_server
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT),
           "HALLMARK_CONFIG": str(home / "config.toml"), "HALLMARK_URL": live_server.url}
    env.pop("HALLMARK_TOKEN", None)
    _hallmark(env, "login", "--signup", "--username", "olivia", "--password-stdin",
              stdin="a long owner password 7\n")
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600

    src = owner_files
    marks = {  # scheme -> (input, marked file name, extra options)
        "lsb": (src / "model.safetensors", "signed.safetensors", []),
        "output_signature": (src / "model.onnx", "served.onnx", []),
        "advparams": (src / "model.safetensors", "encrypted.safetensors",
                      ["--arch", "verifier.toy:MLP", "--data", str(src / "held.safetensors")]),
    }
    for scheme, (model, name, extra) in marks.items():
        printed = _hallmark(env, "watermark", scheme, str(model), "--out", str(home / name),
                            "--key-out", str(home / f"{scheme}.key"), *extra)
        assert "what it proves and does not:" in printed
        printed = _hallmark(env, "register", str(home / name), str(home / f"{scheme}.key"),
                            "--name", f"digits-{scheme}")
        assert "signed by the registry: verified" in printed
        receipts = json.loads((home / f"{name}.receipts.json").read_text())
        assert [c["scheme"] for c in receipts["commitments"]] == [scheme]
        shutil.copy(home / name, served / name)
    shutil.copy(src / "model.onnx", served / "unmarked.onnx")

    for scheme, (_, name, _) in marks.items():
        out = home / f"report-{scheme}.json"
        printed = _hallmark(env, "submit", f"{base}/{name}", "--out", str(out))
        assert "verdict: ATTRIBUTED" in printed, (printed, celery_worker()[-3000:])
        pred = _predicate(out)
        assert pred["verdict"]["attributed"]
        decisions = {c["scheme"]: c["decision"] for c in pred["checks"]}
        assert decisions[scheme] == "attributed", decisions
    out = home / "report-unmarked.json"
    printed = _hallmark(env, "submit", f"{base}/unmarked.onnx", "--out", str(out))
    assert "verdict: not attributed" in printed
    pred = _predicate(out)
    assert not pred["verdict"]["attributed"]
    assert pred["tests_run"] == 3
    assert all(c["decision"] != "attributed" for c in pred["checks"])
    # anyone can fetch the report again, without a token, and gets the same verdict
    found = re.search(r"report ([0-9a-f-]{36}) saved to", printed)
    assert found, printed
    report_id = found.group(1)
    public = {**env, "HALLMARK_CONFIG": str(home / "none.toml")}
    again = _hallmark(public, "report", report_id, "--out", str(home / "again.json"))
    assert "verdict: not attributed" in again and "audit OK" in again
    assert _predicate(home / "again.json") == pred
