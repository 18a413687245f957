"""The image context and the compose file: nothing local is baked in, the services parse."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _ignored(path: str, patterns: list[str]) -> bool:
    verdict = False
    for p in patterns:
        negate = p.startswith("!")
        p = p.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) or \
                fnmatch.fnmatch(path, f"**/{p}") or fnmatch.fnmatch(path.rsplit("/", 1)[-1], p.replace("**/", "")):
            verdict = not negate
    return verdict


def test_the_image_context_leaves_out_venv_git_data_and_secrets():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", ".git/config", ".env", "data/secrets/hallmark_signing_key",
                 "secrets/django_secret_key", ".test-data/x", "registry/__pycache__/a.pyc"):
        assert _ignored(path, patterns), path
    for path in ("registry/settings.py", "verifier/cli.py", "pyproject.toml", ".env.example"):
        assert not _ignored(path, patterns), path


def test_the_dockerfile_runs_as_a_user_that_owns_its_volume():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "COPY . ." not in text  # only the sources, never the whole checkout
    assert "USER hallmark" in text and "chown hallmark:hallmark /data" in text


def test_the_compose_file_parses_and_every_service_has_a_healthcheck():
    # `docker compose config` needs the compose plugin, which this machine cannot install;
    # YAML parsing with the anchors resolved checks the same structure.
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"web", "worker", "postgres", "redis", "witness"} <= set(services)
    for name in ("web", "worker", "postgres", "redis", "witness"):
        assert "healthcheck" in services[name], name
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["HALLMARK_CACHE_URL"].startswith("redis://")  # throttles shared by all
        assert env["HALLMARK_WITNESSES"].startswith("http://witness:7380 ")  # one witness
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
