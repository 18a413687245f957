"""Every test starts with empty throttle counters (the cache outlives one test otherwise)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# A stray huggingface_hub call (outside the Hub tests, which name their loopback Hub) goes to
# loopback's discard port and fails at once: tests never reach huggingface.co. Not
# HF_HUB_OFFLINE: read once at import, it would also switch off the Hub suspects under test.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture(autouse=True)
def _fresh_throttle_counters() -> Iterator[None]:
    from django.core.cache import cache

    cache.clear()
    yield
