"""Fixtures for the hostile corpus: a loopback HTTP server and a loopback-only network."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.hostile.loopback import LoopbackServer, loopback_only_sockets


@pytest.fixture(autouse=True)
def _one_thread_and_loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every hostile test runs with one torch thread and cannot dial anything but loopback."""
    torch.set_num_threads(1)
    refused = loopback_only_sockets(monkeypatch)
    yield refused
    assert refused == [], f"connections to non-loopback addresses were attempted: {refused}"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) in a daemon thread, shut down at teardown."""
    s = LoopbackServer()
    yield s
    s.close()
