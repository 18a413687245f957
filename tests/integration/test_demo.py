"""The README's first command: the end-to-end demo on the embedded default."""
from __future__ import annotations

import os
import re
import subprocess
import sys


def test_the_demo_attributes_the_stolen_copy_and_audits_both_reports(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "HALLMARK_DATA_DIR", "HALLMARK_QUEUE")}
    env["HALLMARK_DEMO_DIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-m", "registry.demo"], env=env, capture_output=True,
                         text=True, timeout=900)
    out = run.stdout
    assert run.returncode == 0, out[-4000:] + run.stderr[-4000:]
    assert "DEMO OK" in out
    stolen = out[out.index("   stolen: ATTRIBUTED"):out.index("   independent: not attributed")]
    # each check prints its forgery cost in bits beside its p-value, and only costly ones attribute
    costly = (r"log10 p = -\d+\.\d, [^;]+; forgery cost (\d+\.\d|∞) bits; key [a-z ]+\)  "
              r"-> attributed")
    assert len(re.findall(costly, stolen)) == 2
    independent = out[out.index("   independent: not attributed"):out.index("6. Offline audit")]
    assert len(re.findall(r"forgery cost \d+\.\d bits.*-> not attributed", independent)) == 2
    assert "trigger_set" in out and "(screened against 21 reference models" in out
    assert out.count("audit OK") == 2
    assert "audit FAILED: signatures: bad signature" in out + run.stderr
    # every process it started is gone: nothing listens on its Redis socket any more
    assert not (tmp_path / "registry" / "redis.sock").exists() or not _alive(tmp_path)


def _alive(tmp_path) -> bool:  # type: ignore[no-untyped-def]
    import socket

    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(tmp_path / "registry" / "redis.sock"))
        return True
    except OSError:
        return False
    finally:
        s.close()
