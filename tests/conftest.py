"""Every test starts with empty throttle counters (the cache outlives one test otherwise)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _fresh_throttle_counters() -> Iterator[None]:
    from django.core.cache import cache

    cache.clear()
    yield
