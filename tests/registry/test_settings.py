"""Settings come from the environment and fail loudly; production refuses development secrets."""
import base64
import os
import subprocess
import sys

import pytest

from registry.env import ConfigError, envbool, envint, envsecret


def _settings(tmp_path, **env: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "DJANGO_"))}
    return subprocess.run([sys.executable, "-c", "import registry.settings"], capture_output=True,
                          text=True, env={**clean, "HALLMARK_DATA_DIR": str(tmp_path), **env})


def test_production_refuses_the_development_secret_key(tmp_path):
    r = _settings(tmp_path, HALLMARK_PRODUCTION="1")
    assert r.returncode != 0 and "DJANGO_SECRET_KEY" in r.stderr and "production" in r.stderr


def test_production_refuses_to_generate_registry_secrets(tmp_path):
    r = _settings(tmp_path, HALLMARK_PRODUCTION="1", DJANGO_SECRET_KEY="x" * 50, DJANGO_DEBUG="0")
    assert r.returncode != 0 and "HALLMARK_SIGNING_KEY" in r.stderr
    assert not (tmp_path / "secrets").exists()


def test_development_generates_secrets_once_with_mode_0600(tmp_path):
    assert _settings(tmp_path).returncode == 0
    key = tmp_path / "secrets" / "hallmark_signing_key"
    first = key.read_text()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert _settings(tmp_path).returncode == 0 and key.read_text() == first


def test_a_malformed_secret_names_the_variable_and_the_fix(tmp_path):
    r = _settings(tmp_path, HALLMARK_MASTER_KEY="not base64!")
    assert "HALLMARK_MASTER_KEY must be base64 of exactly 32 random bytes" in r.stderr


def test_production_refuses_loopback_fetching(tmp_path):
    k = base64.b64encode(b"k" * 32).decode()
    r = _settings(tmp_path, HALLMARK_PRODUCTION="1", DJANGO_SECRET_KEY="x" * 50, DJANGO_DEBUG="0",
                  HALLMARK_SIGNING_KEY=k, HALLMARK_MASTER_KEY=k, HALLMARK_FETCH_ALLOW_LOOPBACK="1")
    assert r.returncode != 0 and "HALLMARK_FETCH_ALLOW_LOOPBACK" in r.stderr


def test_typed_readers_fail_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ConfigError, match="X_BOOL='maybe' is not a boolean"):
        envbool("X_BOOL", False)
    monkeypatch.setenv("X_INT", "12k")
    with pytest.raises(ConfigError, match="X_INT='12k' is not an integer"):
        envint("X_INT", 1)
    secret = tmp_path / "s"
    secret.write_text("from-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert envsecret("X_SECRET") == "from-file"
    monkeypatch.setenv("X_SECRET", "both")
    with pytest.raises(ConfigError, match="set only one"):
        envsecret("X_SECRET")
