"""The sweeper: find verification steps past their deadline and re-drive them, idempotently.

Run by Celery beat every HALLMARK_SWEEP_INTERVAL seconds (`workers.sweep`, on its own queue).
A step is stale (`registry.models.stale`) when no live worker holds its lease and either its
message could not be sent, a worker claimed it after the last message and then died (lease
lapsed), or its last message is older than HALLMARK_REDRIVE_AFTER (lost with the broker).

Per state, what is sent again:
- queued, fetching: the fetch (`claim_fetch` takes a queued row or a lapsed fetching one);
- checking: the unfinished checks (`claim_run` takes a pending row or a lapsed running one):
  the stale rows of one batch as that batch (`workers.check_batch`), a lone stale row as its
  own check; and finalize for a verification whose checks are all finished but never moved on;
- finalizing: finalize (`claim_finalize`; one Report per verification).
Each re-drive first takes the row with a conditional UPDATE of driven_at, so concurrent sweeps
send one message per row; a message that arrives twice finds the work claimed or done.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from registry.models import (
    CHECKING,
    FETCHING,
    FINALIZING,
    QUEUED,
    UNFINISHED,
    CheckResult,
    Verification,
    stale,
)
from workers import dispatch


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Re-drive every stale step; returns how many messages were sent per kind.

    Stops early (the broker is down) at the first failed send; the row it could not send is
    marked and taken first by the next sweep.
    """
    now = now or timezone.now()
    due = stale(now, timedelta(seconds=settings.HALLMARK_REDRIVE_AFTER))
    sent = {"fetch": 0, "check": 0, "finalize": 0}
    for status, kind, send in ((QUEUED, "fetch", dispatch.fetch),
                               (FETCHING, "fetch", dispatch.fetch),
                               (FINALIZING, "finalize", dispatch.finalize)):
        for pk in _candidates(Verification.objects.filter(due, status=status)):
            if _take(Verification, pk, due, now):
                if not send(pk):
                    return sent
                sent[kind] += 1
    unfinished = CheckResult.objects.filter(verification=OuterRef("pk"), status__in=UNFINISHED)
    for pk in _candidates(Verification.objects.filter(due, ~Exists(unfinished), status=CHECKING)):
        if Verification.objects.filter(due, pk=pk, status=CHECKING).update(
                status=FINALIZING, driven_at=now):
            if not dispatch.finalize(pk):
                return sent
            sent["finalize"] += 1
    rows = CheckResult.objects.filter(due, status__in=UNFINISHED, verification__status=CHECKING)
    groups: dict[tuple[int, int | None, int], list[tuple[int, int]]] = {}
    for pk, verification_id, commitment_id, batch in rows.values_list(
            "pk", "verification_id", "commitment_id", "batch")[:settings.HALLMARK_SWEEP_BATCH]:
        # rows of one batch go back as that batch; a row outside any batch, alone
        groups.setdefault((verification_id, batch, pk if batch is None else 0), []).append(
            (pk, commitment_id))
    for (verification_id, batch, _), members in groups.items():
        if len(members) > 1 and batch is not None:
            pks = [pk for pk, _ in members]
            taken = CheckResult.objects.filter(due, pk__in=pks).update(driven_at=now)
            if taken:
                if not dispatch.batches(verification_id, [(batch, pks)]):
                    return sent
                sent["check"] += taken
        elif _take(CheckResult, members[0][0], due, now):
            if not dispatch.checks(verification_id, members):
                return sent
            sent["check"] += 1
    return sent


def _candidates(rows) -> list[int]:  # type: ignore[no-untyped-def]
    return list(rows.values_list("pk", flat=True)[:settings.HALLMARK_SWEEP_BATCH])


def _take(model, pk: int, due: Q, now: datetime) -> bool:  # type: ignore[no-untyped-def]
    """Claim the right to send this row's message (one sweeper wins)."""
    return bool(model.objects.filter(due, pk=pk).update(driven_at=now))
