"""Leases: while a block holds rows, the process's heartbeat keeps their lease_until ahead."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from registry.models import Verification
from registry.submission import submit
from tests.broker import closed_port_url, use_broker
from tests.registry.conftest import make_actor
from workers import lease

# The heartbeat thread writes with its own connection: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def _lease_of(pk: int):  # type: ignore[no-untyped-def]
    return Verification.objects.values_list("lease_until", flat=True).get(pk=pk)


def _verification(name: str = "alice") -> Verification:
    actor = make_actor(name)
    with use_broker(closed_port_url()):  # the send fails; the row stays queued
        return submit(actor.owner, "http://127.0.0.1:9/m.safetensors")


def _wait_for(check, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_held_lease_is_renewed_and_a_released_one_is_not(settings) -> None:  # type: ignore[no-untyped-def]
    settings.HALLMARK_LEASE_SECONDS = 0.6  # renewed every 0.2 s
    v = _verification()
    first = timezone.now() + timedelta(seconds=0.6)
    Verification.objects.filter(pk=v.pk).update(status="fetching", lease_until=first)
    with lease.held(Verification, v.pk, status="fetching"):
        assert _wait_for(lambda: _lease_of(v.pk) > first), "the heartbeat never renewed"
        renewed = _lease_of(v.pk)
        assert _wait_for(lambda: _lease_of(v.pk) > renewed), "renewed only once"
    last = _lease_of(v.pk)
    time.sleep(0.6)  # three periods: a lease still registered would have moved
    assert _lease_of(v.pk) == last


def test_a_lease_whose_row_no_longer_matches_is_left_alone(settings) -> None:  # type: ignore[no-untyped-def]
    settings.HALLMARK_LEASE_SECONDS = 0.6
    v = _verification()
    other = _verification("bob")
    gone = timezone.now() - timedelta(seconds=5)  # the sweeper re-drove it: status changed
    Verification.objects.filter(pk=v.pk).update(status="queued", lease_until=gone)
    Verification.objects.filter(pk=other.pk).update(status="fetching", lease_until=gone)
    with lease.held(Verification, v.pk, status="fetching"), \
            lease.held(Verification, other.pk, status="fetching"):
        assert _wait_for(lambda: _lease_of(other.pk) > timezone.now())
    assert _lease_of(v.pk) == gone
