"""Settings come from the environment and fail loudly; production refuses development secrets."""
import base64
import os
import secrets
import subprocess
import sys

import pytest

from registry.env import ConfigError, envbool, envint, envsecret


def import_settings(tmp_path, **env: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "DJANGO_"))}
    return subprocess.run([sys.executable, "-c", "import registry.settings"], capture_output=True,
                          text=True, env={**clean, "HALLMARK_DATA_DIR": str(tmp_path), **env})


def test_production_refuses_the_development_secret_key(tmp_path):
    r = import_settings(tmp_path, HALLMARK_PRODUCTION="1")
    assert r.returncode != 0 and "DJANGO_SECRET_KEY" in r.stderr and "production" in r.stderr


def test_production_refuses_to_generate_registry_secrets(tmp_path):
    r = import_settings(tmp_path, HALLMARK_PRODUCTION="1", DJANGO_SECRET_KEY="x" * 50,
                        DJANGO_DEBUG="0")
    assert r.returncode != 0 and "HALLMARK_SIGNING_KEY" in r.stderr
    assert not (tmp_path / "secrets").exists()


def test_development_generates_secrets_once_with_mode_0600(tmp_path):
    assert import_settings(tmp_path).returncode == 0
    key = tmp_path / "secrets" / "hallmark_signing_key"
    first = key.read_text()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert import_settings(tmp_path).returncode == 0 and key.read_text() == first


def test_a_malformed_secret_names_the_variable_and_the_fix(tmp_path):
    r = import_settings(tmp_path, HALLMARK_MASTER_KEY="not base64!")
    assert "HALLMARK_MASTER_KEY must be base64 of exactly 32 random bytes" in r.stderr


def test_production_refuses_loopback_fetching(tmp_path):
    k = base64.b64encode(b"k" * 32).decode()
    r = import_settings(tmp_path, HALLMARK_PRODUCTION="1", DJANGO_SECRET_KEY="x" * 50,
                        DJANGO_DEBUG="0", HALLMARK_SIGNING_KEY=k, HALLMARK_MASTER_KEY=k,
                        HALLMARK_FETCH_ALLOW_LOOPBACK="1")
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


def _production_env(tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    def b64key() -> str:
        return base64.b64encode(os.urandom(32)).decode()
    return {"HALLMARK_PRODUCTION": "1", "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
            "HALLMARK_SIGNING_KEY": b64key(), "HALLMARK_MASTER_KEY": b64key(),
            "HALLMARK_CACHE_URL": "redis://127.0.0.1:6379/13",
            "DJANGO_ALLOWED_HOSTS": "registry.example.org",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}


def test_the_documented_production_environment_passes_check_deploy(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "DJANGO_"))}
    r = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], capture_output=True,
                       text=True, env={**clean, "HALLMARK_DATA_DIR": str(tmp_path),
                                       **_production_env(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "System check identified no issues" in r.stdout and "WARNING" not in r.stderr


def test_production_refuses_a_short_secret_key_and_per_process_throttles(tmp_path):
    env = _production_env(tmp_path)
    r = import_settings(tmp_path, **{**env, "DJANGO_SECRET_KEY": "short-but-set"})
    assert r.returncode != 0 and "at least 50 random characters" in r.stderr
    r = import_settings(tmp_path, **{k: v for k, v in env.items() if k != "HALLMARK_CACHE_URL"})
    assert r.returncode != 0 and "HALLMARK_CACHE_URL" in r.stderr


def test_concurrent_first_starts_generate_one_secret_and_leave_no_temporary_files(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "DJANGO_"))}
    code = ("from registry.settings import HALLMARK_SIGNING_KEY as k, HALLMARK_MASTER_KEY as m;"
            "print(k.hex(), m.hex())")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**clean, "HALLMARK_DATA_DIR": str(tmp_path)})
             for _ in range(4)]
    outputs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1  # every process ended up with the same two secrets
    assert sorted(f.name for f in (tmp_path / "secrets").iterdir()) == [
        "hallmark_master_key", "hallmark_signing_key"]


@pytest.mark.parametrize("value,match", [("0", "must lie in (0, 1000]"),
                                         ("eighty", "is not a number")])
def test_a_bad_forgery_floor_names_the_variable(tmp_path, value, match):
    r = import_settings(tmp_path, HALLMARK_MIN_FORGERY_BITS=value)
    assert r.returncode != 0 and "HALLMARK_MIN_FORGERY_BITS" in r.stderr and match in r.stderr
