"""OpenSSF model-signing interop: `hallmark watermark --sign` writes a model-signing bundle
made by the `model-signing` library; `hallmark check-signature` verifies it, and fails for a
tampered file or another key."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from verifier import toy
from verifier.cli import main


def _ec_key(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def signed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path, Path]:
    torch.manual_seed(0)
    model = tmp_path / "model.safetensors"
    save_file(toy.MLP().state_dict(), str(model))
    private, public = _ec_key(tmp_path, "publisher")
    out = tmp_path / "signed.safetensors"
    assert main(["watermark", "lsb", str(model), "--out", str(out), "--key-out",
                 str(tmp_path / "lsb.key"), "--sign", str(private)]) == 0
    assert "model-signing signature:" in capsys.readouterr().out
    return out, out.with_name("signed.safetensors.sig"), public


def test_the_marked_model_carries_a_model_signing_bundle_that_verifies(signed, capsys):
    out, sig, public = signed
    assert '"mediaType":"application/vnd.dev.sigstore.bundle' in sig.read_text()
    assert main(["check-signature", str(out), "--signature", str(sig), "--public-key",
                 str(public)]) == 0
    printed = capsys.readouterr().out
    assert "model-signing signature: OK (key)" in printed and "removable" in printed


def test_a_tampered_file_fails_the_signature_check(signed, tmp_path, capsys):
    out, sig, public = signed
    data = bytearray(out.read_bytes())
    data[-1] ^= 1
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(bytes(data))
    assert main(["check-signature", str(tampered), "--signature", str(sig), "--public-key",
                 str(public)]) == 1
    assert "model-signing signature: FAILED" in capsys.readouterr().out


def test_another_publishers_key_fails_the_signature_check(signed, tmp_path, capsys):
    out, sig, _ = signed
    _, other = _ec_key(tmp_path, "other")
    assert main(["check-signature", str(out), "--signature", str(sig), "--public-key",
                 str(other)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_a_check_without_a_key_or_identity_says_what_to_give(signed, capsys):
    out, sig, _ = signed
    assert main(["check-signature", str(out), "--signature", str(sig)]) == 2
    assert "--public-key" in capsys.readouterr().err


def test_signing_with_the_owners_ed25519_key_is_refused_and_says_which_keys_work(tmp_path,
                                                                                capsys):
    model = tmp_path / "model.safetensors"
    save_file(toy.MLP().state_dict(), str(model))
    assert main(["keygen", "--out", str(tmp_path / "owner.key")]) == 0
    code = main(["watermark", "lsb", str(model), "--out", str(tmp_path / "s.safetensors"),
                 "--key-out", str(tmp_path / "k.key"), "--sign", str(tmp_path / "owner.key")])
    assert code == 2
    assert "elliptic-curve" in capsys.readouterr().err
    assert not (tmp_path / "s.safetensors.sig").exists()
