from collections.abc import Iterator

import pytest

from tests.hostile.loopback import LoopbackServer, loopback_only_sockets


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket.connect to an address but loopback fails the test."""
    loopback_only_sockets(monkeypatch)


@pytest.fixture(autouse=True)
def _loopback_suspects(settings):  # type: ignore[no-untyped-def]
    """Task tests serve suspects on 127.0.0.1, as the operator setting allows in tests."""
    settings.HALLMARK_FETCH = {**settings.HALLMARK_FETCH, "allow_loopback": True}


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture
def broker():  # type: ignore[no-untyped-def]
    """The real Redis broker on a private queue; `broker.take()` reads what was sent."""
    from tests.broker import use_broker

    with use_broker() as b:
        yield b
