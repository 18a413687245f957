"""Sending the next step's messages. A send that fails (broker down) marks the row with
driven_at = null instead of raising, and the sweeper sends it again once the broker is back."""
from __future__ import annotations

from registry.celery_app import enqueue
from registry.models import CheckResult, Verification


def fetch(verification_id: int) -> bool:
    return _verification("workers.fetch", verification_id)


def finalize(verification_id: int) -> bool:
    return _verification("workers.finalize", verification_id)


def _verification(task: str, verification_id: int) -> bool:
    if enqueue(task, verification_id):
        return True
    Verification.objects.filter(pk=verification_id).update(driven_at=None)
    return False


def checks(verification_id: int, rows: list[tuple[int, int]]) -> int:
    """Send one check per (row pk, commitment pk); stop at the first failed send and mark the
    rows left unsent. Returns how many were sent."""
    for n, (_, commitment_id) in enumerate(rows):
        if not enqueue("workers.check", verification_id, commitment_id):
            CheckResult.objects.filter(pk__in=[pk for pk, _ in rows[n:]]).update(driven_at=None)
            return n
    return len(rows)


def batches(verification_id: int, batches: list[tuple[int, list[int]]]) -> int:
    """Send one check batch per (batch number, its row pks); stop at the first failed send and
    mark the rows of the batches left unsent, which the sweeper re-drives. Returns how many
    batches were sent."""
    for n, (batch, _) in enumerate(batches):
        if not enqueue("workers.check_batch", verification_id, batch):
            CheckResult.objects.filter(pk__in=[pk for _, pks in batches[n:] for pk in pks]).update(
                driven_at=None)
            return n
    return len(batches)
