"""A description of the machine a benchmark ran on."""
from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from typing import Any


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "platform": platform.platform(),
            "python": platform.python_version(), "cpu": cpu, "cores": os.cpu_count(),
            "torch": torch.__version__, "load_average": [round(x, 2) for x in os.getloadavg()],
            "code": _code()}


def _code() -> str:
    """The commit measured: HALLMARK_BENCH_CODE if set (a tree without .git), else git's HEAD."""
    if os.environ.get("HALLMARK_BENCH_CODE"):
        return os.environ["HALLMARK_BENCH_CODE"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, cwd=os.path.dirname(__file__))
        return head.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
