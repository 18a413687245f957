"""The chaos benchmark in CI size (`python -m bench.chaos --small`): web, two shared-nothing
workers (and beat, when scheduled) on a private PostgreSQL cluster and a private redis-server;
120 verifications over the API while a worker child and a worker's main process are killed with
-9, Redis is crash-restarted and PostgreSQL restarted with `pg_ctl restart -m immediate`.

It runs as a subprocess: the benchmark starts and kills its own services and never touches the
test database or the machine's Redis.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
# Recovery from these faults needs issue 10 items 1-4 (retries, the beat-scheduled sweeper,
# leases, start-up; branch `dist`): without a beat schedule the run strands work for good (see
# docs/architecture.md, "Chaos and scaling benchmarks"), so it runs once the sweeper exists,
# or when HALLMARK_CHAOS_TEST=1 forces it.
ENABLED = bool(getattr(settings, "CELERY_BEAT_SCHEDULE", None)) or \
    os.environ.get("HALLMARK_CHAOS_TEST") == "1"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ENABLED, reason="needs the sweeper of issue 10 items 1-4 (branch "
                       "dist); HALLMARK_CHAOS_TEST=1 runs it anyway"),
]


@pytest.fixture(scope="module")
def chaos(tmp_path_factory) -> dict:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("chaos") / "chaos.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    proc = subprocess.Popen([sys.executable, "-m", "bench.chaos", "--small", "--json", str(out)],
                            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the benchmark stops its processes and deletes its cluster
        output, _ = proc.communicate(timeout=60)
    assert out.exists(), f"the chaos run did not finish:\n{output[-6000:]}"
    result = json.loads(out.read_text())
    result["output"] = output[-4000:]
    return result


def test_the_faults_were_injected_under_load(chaos: dict) -> None:
    assert chaos["kills_under_load"] >= 2, chaos["faults"]
    assert chaos["redis_restarts_under_load"] == 1, chaos["faults"]
    assert chaos["submitted"] + sum(chaos["submit_errors"].values()) == 120


def test_nothing_is_stuck_after_the_faults(chaos: dict) -> None:
    assert chaos["stuck"] == 0, chaos["output"]
    assert chaos["accepted_without_outcome"] == 0, chaos["output"]


def test_nothing_is_duplicated(chaos: dict) -> None:
    assert not any(chaos["duplicates"].values()), chaos["duplicates"]


def test_every_accepted_verification_has_a_report_with_a_right_verdict(chaos: dict) -> None:
    assert chaos["reports"] >= chaos["submitted"] and not chaos["failed"], chaos["output"]
    assert chaos["wrong_verdicts"] == 0 and chaos["signed_with_errored_checks"] == 0, chaos["output"]


def test_every_report_is_in_the_final_checkpoint_whose_root_and_proofs_verify(chaos: dict) -> None:
    log = chaos["log"]
    assert log["ok"], log["problems"]
    assert log["root_matches"]
    assert log["reports_in_checkpoint"] == log["inclusion_proofs_verified"] == chaos["reports"]
