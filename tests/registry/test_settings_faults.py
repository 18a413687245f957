"""Settings of the fault machinery (leases, sweeper, broker) fail loudly, naming the variable."""
import os
import subprocess
import sys

from tests.registry.test_settings import import_settings


def test_a_visibility_timeout_below_the_task_limit_is_refused(tmp_path):
    r = import_settings(tmp_path, HALLMARK_VISIBILITY_TIMEOUT="600")
    assert r.returncode != 0 and "HALLMARK_VISIBILITY_TIMEOUT must exceed" in r.stderr


def test_a_lease_longer_than_the_task_limit_is_refused(tmp_path):
    r = import_settings(tmp_path, HALLMARK_LEASE_SECONDS="700")
    assert r.returncode != 0 and "HALLMARK_LEASE_SECONDS" in r.stderr


def test_the_sweeper_is_scheduled_on_its_own_queue(tmp_path):
    code = ("import registry.settings as s; print(s.CELERY_BEAT_SCHEDULE['sweep']['schedule'], "
            "s.CELERY_TASK_ROUTES['workers.sweep']['queue'])")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HALLMARK_", "DJANGO_"))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **clean, "HALLMARK_DATA_DIR": str(tmp_path), "HALLMARK_SWEEP_INTERVAL": "7",
        "HALLMARK_QUEUE": "q"})
    assert r.stdout.split() == ["7.0", "q.sweep"], r.stderr
