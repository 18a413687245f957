"""Thin Celery tasks: fetch → group(check per commitment) → finalize.

Each task takes ids, re-reads rows, claims its work atomically and is idempotent, so a
redelivered message (acks_late) does no harm. Finalize is enqueued exactly once, by the
check that completes the count, under a conditional UPDATE (Celery's chord error handling
has known gaps, so no chord is used). No watermark maths here: checks call one
`verifier` function.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import group
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from registry import reporting
from registry.celery_app import app
from registry.models import (
    CHECKED,
    CHECKING,
    DONE,
    ERROR,
    FAILED,
    FETCHING,
    FINALIZING,
    NOT_APPLICABLE,
    QUEUED,
    RUNNING,
    CheckResult,
    Commitment,
    Verification,
)
from registry.secrets import unseal
from verifier import schemes
from verifier.models import ModelFormatError
from verifier.result import TestResult
from workers import suspects
from workers.fetcher import FetchError

log = logging.getLogger("hallmark.workers")
MAX_ATTEMPTS = 2  # a check whose worker died this many times is recorded as an error
FETCH_RETRIES = 3


def _fail(v: Verification, code: str, message: str) -> None:
    Verification.objects.filter(pk=v.pk).update(status=FAILED, error_code=code,
                                                error_message=message, finished_at=timezone.now())


@app.task(name="workers.fetch", bind=True, max_retries=FETCH_RETRIES)
def fetch(self, verification_id: int) -> None:  # type: ignore[no-untyped-def]
    """Fetch and validate the suspect, then fan out one check per commitment."""
    t0 = time.monotonic()
    v = Verification.objects.select_related("suspect", "target").get(pk=verification_id)
    # A fetch claimed longer ago than the hard time limit belongs to a worker that died.
    if not v.claim_fetch(timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)):
        return
    wait = (timezone.now() - v.submitted_at).total_seconds()
    try:
        suspects.prepare(v.suspect)
    except FetchError as e:
        if not e.permanent and self.request.retries < FETCH_RETRIES:
            v.claim(FETCHING, QUEUED)
            raise self.retry(countdown=2 ** self.request.retries) from None
        _fail(v, "fetch_failed", str(e))
        log.info("fetch v=%s failed (%s) in %.2fs", v.public_id, e, time.monotonic() - t0)
        return
    except ModelFormatError as e:
        _fail(v, "bad_model", str(e))
        log.info("fetch v=%s refused model (%s)", v.public_id, e)
        return
    commitments = Commitment.objects.order_by("log_index")
    if v.target is not None:
        commitments = commitments.filter(model=v.target)
    ids = list(commitments.values_list("pk", flat=True))
    with transaction.atomic():
        Verification.objects.filter(pk=v.pk).update(
            status=CHECKING if ids else FINALIZING, checks_expected=len(ids),
            fetched_at=timezone.now())
        if ids:
            transaction.on_commit(lambda: group(check.s(v.pk, c) for c in ids).apply_async())
        else:
            transaction.on_commit(lambda: finalize.delay(v.pk))
    log.info("fetch v=%s ok: %s, %d checks, queued %.2fs, ran %.2fs", v.public_id,
             v.suspect.format or v.suspect.kind, len(ids), wait, time.monotonic() - t0)


def _record(row: CheckResult, fields: dict[str, object]) -> None:
    """Store a check's outcome once; the check that completes the count enqueues finalize."""
    with transaction.atomic():
        if not CheckResult.objects.filter(pk=row.pk, status=RUNNING).update(
                finished_at=timezone.now(), **fields):
            return  # recorded already by an earlier delivery
        v = Verification.objects.get(pk=row.verification_id)
        Verification.objects.filter(pk=v.pk).update(queries=F("queries") + fields.get("queries", 0))
        if v.count_check_done() and v.claim(CHECKING, FINALIZING):
            transaction.on_commit(lambda: finalize.delay(v.pk))


def _result_fields(r: TestResult, seconds: float) -> dict[str, object]:
    return {"status": CHECKED if r.applicable else NOT_APPLICABLE, "statistic": r.statistic,
            "n": r.n, "log10_p": max(r.log10_p, -1e308), "null": r.null, "queries": r.queries,
            "claim": r.claim, "details": r.details, "may_attribute": r.may_attribute,
            "seconds": seconds}


@app.task(name="workers.check")
def check(verification_id: int, commitment_id: int) -> None:
    """Test one commitment's key against the suspect (idempotent per verification × commitment)."""
    t0 = time.monotonic()
    c = Commitment.objects.get(pk=commitment_id)
    row, _ = CheckResult.objects.get_or_create(
        verification_id=verification_id, commitment=c, scheme=c.scheme)
    if row.status != RUNNING:
        return
    CheckResult.objects.filter(pk=row.pk).update(attempts=F("attempts") + 1)
    row.refresh_from_db(fields=["attempts"])
    v = Verification.objects.select_related("suspect").get(pk=verification_id)
    if row.attempts > MAX_ATTEMPTS:
        _record(row, {"status": ERROR, "error": f"the worker was lost {MAX_ATTEMPTS} times "
                      "running this check (out of memory or killed); it was not retried again"})
        return
    wait = (timezone.now() - (v.fetched_at or v.submitted_at)).total_seconds()
    try:
        scheme = schemes.get(c.scheme)
        key = scheme.Key.from_bytes(unseal(settings.HALLMARK_MASTER_KEY, bytes(c.sealed_key)))
        result = scheme.test(suspects.load(v.suspect), key)
    except SoftTimeLimitExceeded:
        _record(row, {"status": ERROR, "error": "the check exceeded its time limit "
                      f"({settings.CELERY_TASK_SOFT_TIME_LIMIT} s); raise HALLMARK_TASK_SOFT_TIME_LIMIT"})
        return
    except Exception as e:  # one broken check must not block the verification's report
        log.exception("check v=%s c=%s failed", v.public_id, c.digest[:12])
        _record(row, {"status": ERROR, "error": f"{type(e).__name__}: {e}"})
        return
    seconds = time.monotonic() - t0
    _record(row, _result_fields(result, seconds))
    log.info("check v=%s c=%s %s %s log10p=%.1f queries=%d, queued %.2fs, ran %.2fs",
             v.public_id, c.digest[:12], c.scheme, "applicable" if result.applicable else "n/a",
             result.log10_p, result.queries, wait, seconds)


@app.task(name="workers.finalize")
def finalize(verification_id: int) -> None:
    """Aggregate, sign, log and store the report, exactly once."""
    t0 = time.monotonic()
    v = Verification.objects.select_related("suspect", "target").get(pk=verification_id)
    if v.status != FINALIZING:
        return
    if v.finished_at is None:
        v.finished_at = timezone.now()
        Verification.objects.filter(pk=v.pk).update(finished_at=v.finished_at)
    report = reporting.finalize(v)
    v.claim(FINALIZING, DONE)
    log.info("finalize v=%s report=%s log=%s in %.2fs", v.public_id, report.public_id,
             report.log_index, time.monotonic() - t0)

