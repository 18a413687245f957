import pytest


@pytest.fixture(autouse=True)
def _loopback_suspects(settings):  # type: ignore[no-untyped-def]
    """Task tests serve suspects on 127.0.0.1, as the operator setting allows in tests."""
    settings.HALLMARK_FETCH = {**settings.HALLMARK_FETCH, "allow_loopback": True}
