"""Credentials for the registry commands (verifier.owners.config) and the checks `register`
makes before anything is sent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from verifier import toy
from verifier.cli import main
from verifier.owners.config import credentials, read_config, write_config
from verifier.owners.errors import OwnerToolError

CLOSED = "http://127.0.0.1:9"  # nothing listens there: a request would fail with "cannot reach"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("HALLMARK_URL", "HALLMARK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HALLMARK_CONFIG", str(tmp_path / "config.toml"))
    return {"HALLMARK_CONFIG": str(tmp_path / "config.toml")}


def test_login_writes_a_config_readable_only_by_its_owner(env, tmp_path):
    path = Path(env["HALLMARK_CONFIG"])
    write_config(path, "http://registry.test", "tok")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert read_config(path) == {"url": "http://registry.test", "token": "tok"}
    assert credentials(env=env).token == "tok"


def test_a_config_with_a_token_readable_by_others_is_refused(env):
    path = Path(env["HALLMARK_CONFIG"])
    write_config(path, "http://registry.test", "tok")
    os.chmod(path, 0o644)
    with pytest.raises(OwnerToolError, match="chmod 600"):
        credentials(env=env)


def test_a_token_is_never_sent_to_another_registry_than_its_own(env):
    write_config(Path(env["HALLMARK_CONFIG"]), "http://registry.test", "tok")
    with pytest.raises(OwnerToolError, match="not sent elsewhere"):
        credentials("http://other.test", env=env)
    assert credentials("http://other.test", env=env, need_token=False).token is None


def test_the_environment_comes_before_the_config_file(env):
    write_config(Path(env["HALLMARK_CONFIG"]), "http://registry.test", "tok")
    c = credentials(env={**env, "HALLMARK_URL": "http://env.test/", "HALLMARK_TOKEN": "envtok"})
    assert (c.url, c.token, c.source) == ("http://env.test", "envtok", "HALLMARK_TOKEN")


def test_without_any_registry_the_error_says_how_to_name_one(env, capsys):
    assert main(["submit", "http://example.org/m.onnx"]) == 2
    err = capsys.readouterr().err
    assert "--registry URL" in err and "HALLMARK_URL" in err and "hallmark login" in err


def test_a_bad_toml_config_is_named(env):
    Path(env["HALLMARK_CONFIG"]).write_text("url = [unclosed\n")
    with pytest.raises(OwnerToolError, match="not valid TOML"):
        credentials(env=env)


def test_register_refuses_a_key_of_another_model_before_sending_anything(env, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("HALLMARK_TOKEN", "tok")
    torch.manual_seed(0)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(toy.MLP().state_dict(), str(a))
    save_file(toy.MLP().state_dict(), str(b))
    assert main(["watermark", "lsb", str(a), "--out", str(tmp_path / "a-signed.safetensors"),
                 "--key-out", str(tmp_path / "a.key")]) == 0
    capsys.readouterr()
    code = main(["register", str(b), str(tmp_path / "a.key"), "--name", "b",
                 "--registry", CLOSED])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not test positive on" in err and "cannot reach" not in err
    assert not (tmp_path / "b.safetensors.receipts.json").exists()


def test_register_refuses_an_owner_signing_key_given_as_a_watermark_key(env, tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.setenv("HALLMARK_TOKEN", "tok")
    model = tmp_path / "m.safetensors"
    save_file(toy.MLP().state_dict(), str(model))
    assert main(["keygen", "--out", str(tmp_path / "owner.key")]) == 0
    capsys.readouterr()
    assert main(["register", str(model), str(tmp_path / "owner.key"), "--name", "m",
                 "--registry", CLOSED]) == 2
    assert "hallmark watermark" in capsys.readouterr().err
