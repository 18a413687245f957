"""A description of the machine a benchmark ran on."""
from __future__ import annotations

import os
import platform
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
            "torch": torch.__version__}
