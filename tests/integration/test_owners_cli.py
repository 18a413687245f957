"""Owners' tools end to end, as an owner runs them: `hallmark login`, `watermark` (each
post-training scheme), `register` and `submit` as subprocesses against a live registry on
PostgreSQL, Redis and a real celery worker."""
from __future__ import annotations

import base64
import hashlib
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


def _hallmark(env: dict[str, str], *args: str, stdin: str | None = None, code: int = 0) -> str:
    done = subprocess.run([sys.executable, "-m", "verifier.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=600, cwd=env["HOME"])
    assert done.returncode == code, f"hallmark {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout if code == 0 else done.stdout + done.stderr


def _predicate(report: Path) -> dict:
    doc = json.loads(report.read_text())
    return json.loads(base64.b64decode(doc["envelope"]["payload"]))["predicate"]


def _ec_key(private: Path, public: Path) -> None:
    """A publisher's elliptic-curve key pair for model-signing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _report_id(printed: str) -> str:
    found = re.search(r"report ([0-9a-f-]{36}) saved to", printed)
    assert found, printed
    return found.group(1)


@pytest.fixture(scope="module")
def owner_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The owner's trained model as safetensors and ONNX, and held-out data for AdvParams."""
    folder = tmp_path_factory.mktemp("owner")
    split = toy.digits()
    torch.manual_seed(0)
    model = toy.train_digits(toy.MLP(), split, epochs=8).eval()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    save_file({"x": split.x_held, "y": split.y_held}, str(folder / "held.safetensors"))
    _ec_key(folder / "ec.pem", folder / "ec.pub.pem")
    export_torchscript(model, (torch.zeros(2, 64),), str(folder / "model.onnx"),
                       input_names=["input"], output_names=["logits"],
                       dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return folder


@pytest.fixture
def owner_env(live_server, tmp_path: Path) -> dict[str, str]:
    """An owner's shell: a fresh HOME, signed up with `hallmark login --signup`."""
    home = tmp_path / "home"
    home.mkdir()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": path,
           "HALLMARK_CONFIG": str(home / "config.toml"), "HALLMARK_URL": live_server.url}
    env.pop("HALLMARK_TOKEN", None)
    _hallmark(env, "login", "--signup", "--username", "olivia", "--password-stdin",
              stdin="a long owner password 7\n")
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600
    return env


def test_an_owner_marks_registers_and_gets_attributed_reports_from_the_command_line(
        celery_worker, file_server, owner_env, owner_files):
    base, served = file_server
    env = owner_env
    home = Path(env["HOME"])

    src = owner_files
    marks = {  # scheme -> (input, marked file name, extra options)
        "lsb": (src / "model.safetensors", "signed.safetensors", ["--sign", str(src / "ec.pem")]),
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
        if scheme == "lsb":
            lsb_report = _report_id(printed)

    # the publisher's model-signing signature of the lsb-marked file, shown beside the verdict;
    # a tampered file fails that part (and is not the report's subject)
    signature = ["--signature", str(home / "signed.safetensors.sig"),
                 "--public-key", str(src / "ec.pub.pem")]
    printed = _hallmark(env, "report", lsb_report, "--out", str(home / "lsb-again.json"),
                        "--suspect-file", str(served / "signed.safetensors"), *signature)
    assert "verdict: ATTRIBUTED" in printed and "model-signing signature: OK" in printed
    assert "is the report's subject" in printed
    tampered = bytearray((served / "signed.safetensors").read_bytes())
    tampered[-1] ^= 1
    (home / "tampered.safetensors").write_bytes(bytes(tampered))
    printed = _hallmark(env, "report", lsb_report, "--out", str(home / "lsb-tampered.json"),
                        "--suspect-file", str(home / "tampered.safetensors"), *signature,
                        code=1)
    assert "model-signing signature: FAILED" in printed and "is NOT the report's subject" in printed
    failed = _hallmark(env, "submit", f"{base}/missing.onnx", "--quiet", code=2)
    assert "failed: fetch_failed" in failed and "404" in failed
    out = home / "report-unmarked.json"
    printed = _hallmark(env, "submit", f"{base}/unmarked.onnx", "--out", str(out))
    assert "verdict: not attributed" in printed
    pred = _predicate(out)
    assert not pred["verdict"]["attributed"]
    assert pred["tests_run"] == 3
    assert all(c["decision"] != "attributed" for c in pred["checks"])
    # anyone can fetch the report again, without a token, and gets the same verdict
    report_id = _report_id(printed)
    public = {**env, "HALLMARK_CONFIG": str(home / "none.toml")}
    again = _hallmark(public, "report", report_id, "--out", str(home / "again.json"),
                      "--suspect-file", str(served / "unmarked.onnx"))
    assert "verdict: not attributed" in again and "audit OK" in again
    assert "graph signature: unsigned" in again  # declared provenance, shown beside the verdict
    assert _predicate(home / "again.json") == pred


def _release_zip(folder: Path, files: dict[str, bytes], out: Path) -> None:
    """A suspect as docs/owners.md ships a signed release: a .zip of one folder."""
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    shutil.make_archive(str(out.with_suffix("")), "zip", root_dir=folder.parent,
                        base_dir=folder.name)


def test_a_model_signing_bundle_on_a_marked_model_is_verified_by_the_worker_and_signed_beside_the_verdict(
        celery_worker, file_server, owner_env, owner_files):
    base, served = file_server
    env = owner_env
    home = Path(env["HOME"])
    src = owner_files
    _hallmark(env, "watermark", "lsb", str(src / "model.safetensors"), "--out",
              str(home / "signed.safetensors"), "--key-out", str(home / "lsb.key"),
              "--sign", str(src / "ec.pem"))
    _hallmark(env, "register", str(home / "signed.safetensors"), str(home / "lsb.key"),
              "--name", "digits-published")
    marked = (home / "signed.safetensors").read_bytes()
    release = {"signed.safetensors": marked,
               "model.sig": (home / "signed.safetensors.sig").read_bytes(),
               "model.pub.pem": (src / "ec.pub.pem").read_bytes()}
    _release_zip(home / "release", release, served / "release.zip")
    tampered = bytearray(marked)
    tampered[-1] ^= 1
    _release_zip(home / "tampered", {**release, "signed.safetensors": bytes(tampered)},
                 served / "tampered.zip")
    bundle = json.loads(release["model.sig"])
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[10] ^= 1
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    _release_zip(home / "forged", {**release, "model.sig": json.dumps(bundle).encode()},
                 served / "forged.zip")

    # (zip, model-signing status, verdict line): lsb marks a bit-exact copy, so the tampered
    # weights lose the mark too; the forged signature on intact weights changes nothing else
    cases = [("release", "valid", "verdict: ATTRIBUTED"),
             ("tampered", "invalid", "verdict: not attributed"),
             ("forged", "invalid", "verdict: ATTRIBUTED")]
    verdicts = {}
    for name, status, verdict in cases:
        out = home / f"report-{name}.json"
        printed = _hallmark(env, "submit", f"{base}/{name}.zip", "--out", str(out))
        assert verdict in printed, (printed, celery_worker()[-3000:])
        assert "audit OK" in printed
        pred = _predicate(out)
        verdicts[name] = {k: v for k, v in pred["verdict"].items()}
        section = pred["provenance"]  # inside the signed statement, so the audit covered it
        assert section["label"] == "declared provenance: removable by re-export"
        assert section["affects_verdict"] is False
        assert section["graph_signature"]["status"] == "absent"
        signing = section["model_signing"]
        assert signing["status"] == status, signing
        assert f"model-signing: {status}" in printed
        assert signing["key_sha256"] == hashlib.sha256((src / "ec.pub.pem").read_bytes()).hexdigest()
        assert signing["signed_files"] == ["signed.safetensors"]
        assert signing["key_source"] == "shipped with the suspect (model.pub.pem)"
    assert "Signature mismatch" in _predicate(home / "report-tampered.json")[
        "provenance"]["model_signing"]["detail"]

    # without a shipped key, the key the submitter names in the request verifies it
    _release_zip(home / "keyless", {k: v for k, v in release.items() if k != "model.pub.pem"},
                 served / "keyless.zip")
    for name, extra, status, source in [
            ("keyless", [], "unverified", None),
            ("keyless-named", ["--publisher-key", str(src / "ec.pub.pem")], "valid",
             "named in the request")]:
        out = home / f"report-{name}.json"
        printed = _hallmark(env, "submit", f"{base}/keyless.zip", "--out", str(out), *extra)
        assert "verdict: ATTRIBUTED" in printed and f"model-signing: {status}" in printed
        signing = _predicate(out)["provenance"]["model_signing"]
        assert (signing["status"], signing["key_source"]) == (status, source), signing
    refused = _hallmark(env, "submit", f"{base}/keyless.zip", "--publisher-key",
                        str(src / "ec.pem.missing"), code=2)
    assert "--publisher-key" in refused
    (home / "owner.pub").write_text("not a key")
    refused = _hallmark(env, "submit", f"{base}/keyless.zip", "--publisher-key",
                        str(home / "owner.pub"), code=2)
    assert "is not an elliptic-curve public key in PEM" in refused
    # a failing publisher signature never changes the watermark verdict
    assert verdicts["forged"] == verdicts["release"]
    assert verdicts["release"]["attributed"] is True


def test_a_bring_your_own_key_owner_registers_with_requests_signed_on_their_machine(
        live_server, owner_files, tmp_path):
    home = tmp_path / "byok"
    home.mkdir()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": path,
           "HALLMARK_CONFIG": str(home / "config.toml"), "HALLMARK_URL": live_server.url}
    env.pop("HALLMARK_TOKEN", None)
    _hallmark(env, "keygen", "--out", str(home / "owner.key"))
    _hallmark(env, "login", "--signup", "--username", "bea", "--public-key",
              str(home / "owner.key.pub"), "--password-stdin", stdin="bea's long password 9\n")
    _hallmark(env, "watermark", "lsb", str(owner_files / "model.safetensors"), "--out",
              str(home / "signed.safetensors"), "--key-out", str(home / "lsb.key"))
    refused = _hallmark(env, "register", str(home / "signed.safetensors"), str(home / "lsb.key"),
                        "--name", "digits", code=2)
    assert "--owner-key OWNER.key" in refused
    assert not (home / "signed.safetensors.receipts.json").exists()
    printed = _hallmark(env, "register", str(home / "signed.safetensors"), str(home / "lsb.key"),
                        "--name", "digits", "--owner-key", str(home / "owner.key"))
    assert printed.count("signed by the registry: verified") == 2  # the model and the key
    receipts = json.loads((home / "signed.safetensors.receipts.json").read_text())
    assert receipts["commitments"][0]["scheme"] == "lsb"


@pytest.mark.slow
def test_the_minilm_example_fine_tunes_registers_and_its_adapter_is_attributed(
        celery_worker, file_server, owner_env):
    base, served = file_server
    env = owner_env
    home = Path(env["HOME"])
    # the Trainer path (HallmarkCallback(seal=key)); seal.embed on MiniLM is covered by
    # tests/verifier/test_seal_minilm.py
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "owner_minilm.py"), "--out",
                           str(home / "minilm"), "--trainer", "--register", "--name",
                           "minilm-sentiment"],
                          env=env, capture_output=True, text=True, timeout=900, cwd=home)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "fine-tuned with SEAL in a Trainer" in done.stdout
    assert "signed by the registry: verified" in done.stdout
    shutil.make_archive(str(served / "minilm-adapter"), "zip", root_dir=home / "minilm" / "adapter")
    out = home / "report-minilm.json"
    printed = _hallmark(env, "submit", f"{base}/minilm-adapter.zip", "--out", str(out))
    assert "verdict: ATTRIBUTED" in printed, (printed, celery_worker()[-3000:])
    assert {c["scheme"]: c["decision"] for c in _predicate(out)["checks"]} == {"seal": "attributed"}
