"""`hallmark decrypt MODEL --licence LICENCE --out OUT [--registry-key B64]`."""
import base64
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from verifier import toy
from verifier.cli import main
from verifier.evidence.identity import Identity, b64
from verifier.licence import issue_licence
from verifier.schemes import advparams as ap

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core

REGISTRY, OWNER, OUTSIDER = (Identity.from_seed(bytes([i]) * 32) for i in (4, 5, 6))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """An owner's plain model, its encrypted release on disk, and a licence for Acme."""
    split = toy.digits()
    torch.manual_seed(0)
    model = toy.train_digits(toy.MLP(), split, epochs=5)
    enc, key = ap.encrypt(model, ap.Params(), seed=3, data=(split.x_held, split.y_held))
    folder = tmp_path_factory.mktemp("published")
    weights = {k: v.detach().contiguous() for k, v in enc.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"))
    doc = issue_licence("Acme Ltd", weights, key, REGISTRY, OWNER, model_name="digits-mlp",
                        issued_at="2026-01-31T12:00:00Z")
    (folder / "licence.json").write_text(json.dumps(doc))
    return model, folder


def _run(published, tmp_path, *extra, licence=None, model=None):
    _, folder = published
    out = tmp_path / "plain.safetensors"
    code = main(["decrypt", str(model or folder / "model.safetensors"),
                 "--licence", str(licence or folder / "licence.json"), "--out", str(out), *extra])
    return code, out


def test_it_decrypts_the_licensed_model_bit_exact(published, tmp_path, capsys):
    model, _ = published
    code, out = _run(published, tmp_path, "--registry-key", b64(REGISTRY.public_key))
    assert code == 0
    plain = load_file(str(out))
    assert set(plain) == set(model.state_dict())
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items())
    printed = capsys.readouterr()
    assert "for Acme Ltd" in printed.out and "digits-mlp" in printed.out
    assert printed.err == ""


def test_without_a_registry_key_it_warns_that_only_integrity_was_checked(published, tmp_path,
                                                                         capsys):
    code, out = _run(published, tmp_path)
    assert code == 0 and out.exists()
    assert "no --registry-key" in capsys.readouterr().err


def test_it_refuses_a_licence_not_signed_by_the_given_registry(published, tmp_path, capsys):
    code, out = _run(published, tmp_path, "--registry-key", b64(OUTSIDER.public_key))
    assert code == 2 and not out.exists()
    assert "rejected" in capsys.readouterr().err


def test_it_refuses_a_tampered_licence(published, tmp_path, capsys):
    _, folder = published
    doc = json.loads((folder / "licence.json").read_text())
    payload = base64.b64decode(doc["payload"]).replace(b"Acme Ltd", b"Evil Ltd")
    doc["payload"] = base64.b64encode(payload).decode()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    code, out = _run(published, tmp_path, "--registry-key", b64(REGISTRY.public_key),
                     licence=forged)
    assert code == 2 and not out.exists()
    assert "bad signature" in capsys.readouterr().err


def test_it_refuses_a_model_the_licence_does_not_name(published, tmp_path, capsys):
    model, _ = published
    plain = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(plain))
    code, out = _run(published, tmp_path, model=plain)
    assert code == 2 and not out.exists()
    assert "covers the model with digest" in capsys.readouterr().err


def test_it_never_overwrites_an_existing_output(published, tmp_path, capsys):
    out = tmp_path / "plain.safetensors"
    out.write_bytes(b"keep me")
    code, _ = _run(published, tmp_path)
    assert code == 2 and out.read_bytes() == b"keep me"
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "cannot read licence"),
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
])
def test_it_explains_an_unreadable_licence(published, tmp_path, capsys, content, message):
    licence = tmp_path / "licence.json"
    if content is not None:
        licence.write_bytes(content)
    code, out = _run(published, tmp_path, licence=licence)
    assert code == 2 and not out.exists()
    assert message in capsys.readouterr().err


def test_it_explains_a_model_file_that_is_not_safetensors(published, tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 64)
    code, out = _run(published, tmp_path, model=bad)
    assert code == 2 and not out.exists()
    assert "cannot read" in capsys.readouterr().err
    assert not list(tmp_path.glob(".hallmark-decrypt-*"))


def test_it_explains_a_malformed_registry_key(published, tmp_path, capsys):
    code, out = _run(published, tmp_path, "--registry-key", "not-a-key!")
    assert code == 2 and not out.exists()
    assert "not a public key" in capsys.readouterr().err
