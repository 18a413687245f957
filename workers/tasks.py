"""Thin Celery tasks: fetch → check batches (K commitments each) → finalize, plus the sweeper.

Each task takes ids, re-reads rows, claims its work atomically under a lease it renews while
running (workers/lease.py), and is idempotent, so a redelivered or re-driven message does no
harm. Finalize is enqueued by the check that completes the count, under a conditional UPDATE
(Celery's chord error handling has known gaps, so no chord is used). No watermark maths here:
checks call one `verifier` function.

Failures split in two (docs/architecture.md, "Faults"):
- infrastructure (database, broker, this host's cache, the suspect's server answering
  "try later"): the claim is released and the task retried with exponential backoff and full
  jitter on any worker; after the retries the sweeper re-drives it. Never a result.
- deterministic outcomes (a scheme raising, a refused download or model, a time limit, a
  worker lost HALLMARK_CHECK_MAX_LOST times on the same check): stored once, as results.
"""
from __future__ import annotations

import logging
import time
import uuid
from itertools import groupby
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from registry import reporting
from registry.celery_app import BROKER_ERRORS, app
from registry.models import (
    ACTIVE,
    CHECKED,
    CHECKING,
    DONE,
    ENDPOINT,
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
from verifier import scan, schemes
from verifier.models import ModelFormatError
from verifier.result import TestResult
from workers import dispatch, hub, lease, suspects, sweeper
from workers.fetcher import FetchError

log = logging.getLogger("hallmark.workers")
FETCH_RETRIES = 3  # a suspect's server answering "try later" on the first fetch
# Retried, never reported: the database, the broker, this host's cache folder.
INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, OSError, *BROKER_ERRORS)
_RETRY = {"autoretry_for": INFRASTRUCTURE, "retry_backoff": True, "retry_jitter": True,
          "retry_backoff_max": settings.HALLMARK_RETRY_BACKOFF_MAX,
          "max_retries": settings.HALLMARK_TASK_RETRIES}


def _backoff(retries: int) -> int:
    """Seconds before retry number `retries` + 1: exponential, capped, full jitter."""
    return get_exponential_backoff_interval(1, retries, settings.HALLMARK_RETRY_BACKOFF_MAX,
                                            full_jitter=True)


def _fail(v: Verification, code: str, message: str) -> None:
    Verification.objects.filter(pk=v.pk, status__in=ACTIVE).update(
        status=FAILED, error_code=code, error_message=message, finished_at=timezone.now(),
        lease_until=None)


def _released(release: object) -> None:
    """Give a claim back after an infrastructure failure, so the retry can take it at once.

    The failure may have broken this thread's connection (a database restart): it is closed
    and the release tried once more on a new one. If the database is still down, the lease
    lapses instead and the sweeper re-drives the work.
    """
    for last in (False, True):
        try:
            release()  # type: ignore[operator]
            return
        except (OperationalError, InterfaceError) as e:
            connections.close_all()
            if last:
                log.warning("could not release a claim (%s); its lease will lapse", e)


@app.task(name="workers.fetch", bind=True, **_RETRY)
def fetch(self, verification_id: int) -> None:  # type: ignore[no-untyped-def]
    """Fetch and validate the suspect, then fan out one check per commitment."""
    t0 = time.monotonic()
    v = Verification.objects.select_related("suspect", "target").get(pk=verification_id)
    if not v.claim_fetch(lease.duration()):
        return  # done, or a live worker holds it
    try:
        with lease.held(Verification, v.pk, status=FETCHING):
            _fetch(self, v, t0)
    except INFRASTRUCTURE:
        _released(v.release)
        raise


def _fetch(task, v: Verification, t0: float) -> None:  # type: ignore[no-untyped-def]
    wait = (timezone.now() - v.submitted_at).total_seconds()
    try:
        suspects.prepare(v.suspect)
        provenance = suspects.provenance(v.suspect, v.publisher_keys)  # beside the verdict
    except FetchError as e:
        if not e.permanent and task.request.retries < FETCH_RETRIES:
            v.claim(FETCHING, QUEUED)
            raise task.retry(countdown=_backoff(task.request.retries)) from None
        _fail(v, "fetch_failed", str(e))
        log.info("fetch v=%s failed (%s) in %.2fs", v.public_id, e, time.monotonic() - t0)
        return
    except suspects.SuspectChanged as e:
        _fail(v, "suspect_changed", str(e))
        log.info("fetch v=%s refused: %s", v.public_id, e)
        return
    except ModelFormatError as e:
        _fail(v, "bad_model", str(e))
        log.info("fetch v=%s refused model (%s)", v.public_id, e)
        return
    planned, selection = _plan(v)
    now = timezone.now()
    with transaction.atomic():
        # Status, expected count and the pending check rows commit together: whatever dies
        # after this point, the sweeper finds exactly which checks are missing.
        if not Verification.objects.filter(pk=v.pk, status=FETCHING).update(
                status=CHECKING if planned else FINALIZING, checks_expected=len(planned),
                fetched_at=now, lease_until=None, driven_at=now, provenance=provenance,
                scan=selection):
            return  # another worker took the fetch over after a stall and fanned out
        rows = CheckResult.objects.bulk_create(
            [CheckResult(verification_id=v.pk, commitment_id=c, scheme=s, driven_at=now, batch=b)
             for b, c, s in planned], batch_size=1000)
        if rows:
            batches = [(b, [r.pk for r in group]) for b, group in
                       groupby(rows, key=lambda r: r.batch)]
            transaction.on_commit(lambda: dispatch.batches(v.pk, batches))
        else:
            transaction.on_commit(lambda: dispatch.finalize(v.pk))
    log.info("fetch v=%s ok: %s, %d checks in %d batches (%s), queued %.2fs, ran %.2fs",
             v.public_id, v.suspect.format or v.suspect.kind, len(planned),
             len({b for b, _, _ in planned}), _summary(selection), wait, time.monotonic() - t0)


def _summary(selection: dict[str, Any]) -> str:
    if not selection:
        return "targeted"
    return (f"scan of {selection['commitments']}: {selection['candidates']} candidates, "
            f"{sum(selection['not_applicable'].values())} not applicable")


def _plan(v: Verification) -> tuple[list[tuple[int, int, str]], dict[str, Any]]:
    """The checks to run as (batch, commitment pk, scheme), and the scan's selection.

    A targeted verification checks every commitment of its model (each gets a row and, if it
    does not apply, its reason). A scan checks only candidates: commitments whose indexed
    requirement the suspect's profile satisfies (verifier.scan); the rest are counted per
    scheme. Both queries read the registry up to one log index, so the counts add up.
    Checks are ordered by scheme, keys with the same host layers next to each other (so uchida
    computes each host vector once per batch), and cut into batches by `_batched`.
    """
    commitments = Commitment.objects.exclude(log_index=None)
    if v.target is not None:
        picked = [(c, s, "") for c, s in commitments.filter(model=v.target).order_by(
            "log_index").values_list("pk", "scheme")]
        return _batched(sorted(picked, key=lambda p: p[1])), {}
    profile = _profile(v)
    top = commitments.aggregate(top=Max("log_index"))["top"]
    if top is None:
        return [], {"profile": profile.to_dict(), "log_index": None, "commitments": 0,
                    "candidates": 0, "not_applicable": {}}
    commitments = commitments.filter(log_index__lte=top)
    totals = dict(commitments.order_by().values_list("scheme").annotate(n=Count("pk")))
    wanted = Q(needs=scan.ANY)
    if profile.predict:
        wanted |= Q(needs=scan.PREDICT)
    if profile.weights:
        wanted |= Q(needs=scan.WEIGHTS, index_shape__in=[
            "", *(scan.shape_text(s) for s in profile.shapes)])
    rows = commitments.filter(wanted).values_list("pk", "scheme", "index_shape", "requirement",
                                                  "log_index")
    picked = sorted(((c, s, str(r)) for c, s, _, r, _ in sorted(rows, key=lambda r: r[4])
                     if scan.satisfies(profile, scan.Requirement.from_dict(r))),
                    key=lambda p: (p[1], p[2]))  # stable: log order within a host group
    ran: dict[str, int] = {}
    for _, s, _ in picked:
        ran[s] = ran.get(s, 0) + 1
    return _batched(picked), {
        "profile": profile.to_dict(), "log_index": top, "commitments": sum(totals.values()),
        "candidates": len(picked),
        "not_applicable": {s: n - ran.get(s, 0) for s, n in sorted(totals.items())
                           if n - ran.get(s, 0)}}


def _batched(picked: list[tuple[int, str, str]]) -> list[tuple[int, int, str]]:
    """Number the checks into batches (in `picked`'s order, so each scheme's keys stay
    together): at most HALLMARK_SCAN_BATCH checks each; work beyond HALLMARK_SCAN_MIN_BATCH
    checks is cut into up to HALLMARK_SCAN_SPREAD batches so that it still runs on several
    workers at once (2 checks: 1 batch; 8: 2 of 4; 10,000: 40 of 250).

    A batch may hold several schemes (`_run_batch` tests each scheme's keys together): a small
    verification costs one task, one claim, one record and one load of the suspect, not one
    per scheme.
    """
    limit = min(settings.HALLMARK_SCAN_BATCH,
                max(settings.HALLMARK_SCAN_MIN_BATCH, -(-len(picked) // settings.HALLMARK_SCAN_SPREAD)))
    return [(i // limit, c, s) for i, (c, s, _) in enumerate(picked)]


def _profile(v: Verification) -> scan.Profile:
    """What the suspect offers (an endpoint: predict only, never queried for this)."""
    if v.suspect.kind == ENDPOINT:
        return scan.Profile(weights=False, predict=True)
    return scan.profile(suspects.load(v.suspect))


def _record(row: CheckResult, fields: dict[str, object]) -> None:
    """Store a check's outcome once; the check that completes the count enqueues finalize."""
    with transaction.atomic():
        if not CheckResult.objects.filter(pk=row.pk, status=RUNNING).update(
                finished_at=timezone.now(), lease_until=None, **fields):
            return  # recorded already by an earlier delivery
        v = Verification.objects.get(pk=row.verification_id)
        if v.count_check_done(queries=int(fields.get("queries", 0))) and v.claim(  # type: ignore[call-overload]
                CHECKING, FINALIZING):
            transaction.on_commit(lambda: dispatch.finalize(v.pk))


def _result_fields(r: TestResult, seconds: float) -> dict[str, object]:
    return {"status": CHECKED if r.applicable else NOT_APPLICABLE, "statistic": r.statistic,
            "n": r.n, "log10_p": max(r.log10_p, -1e308), "null": r.null, "queries": r.queries,
            "claim": r.claim, "details": r.details, "may_attribute": r.may_attribute,
            "seconds": seconds}


@app.task(name="workers.check", bind=True, **_RETRY)
def check(self, verification_id: int, commitment_id: int) -> None:  # type: ignore[no-untyped-def]
    """Test one commitment's key against the suspect (idempotent per verification × commitment)."""
    t0 = time.monotonic()
    row = CheckResult.objects.filter(verification_id=verification_id,
                                     commitment_id=commitment_id).first()
    if row is None or not row.claim_run(lease.duration()):
        return  # finished, or a live worker holds it
    try:
        v = Verification.objects.select_related("suspect").get(pk=verification_id)
        if v.status != CHECKING:
            return  # the verification failed meanwhile (e.g. the suspect changed)
        if row.attempts > settings.HALLMARK_CHECK_MAX_LOST:
            _record(row, {"status": ERROR, "error": f"the worker was lost {row.attempts - 1} "
                          "times running this check (out of memory or killed); it was not "
                          "retried again"})
            return
        with lease.held(CheckResult, row.pk, status=RUNNING):
            _check(self, v, row, t0)
    except INFRASTRUCTURE:
        _released(row.release)
        raise


def _retry_or_give_up(task, row: CheckResult, e: FetchError) -> None:  # type: ignore[no-untyped-def]
    """The suspect's server said "try later": retry with backoff, then record the error."""
    if task.request.retries < task.max_retries:
        _released(row.release)
        raise task.retry(countdown=_backoff(task.request.retries)) from None
    _record(row, {"status": ERROR, "error": f"the suspect's server kept failing after "
                  f"{task.max_retries} retries: {e}"})


def _check(task, v: Verification, row: CheckResult, t0: float) -> None:  # type: ignore[no-untyped-def]
    c = Commitment.objects.get(pk=row.commitment_id)
    wait = (timezone.now() - (v.fetched_at or v.submitted_at)).total_seconds()
    try:
        suspect = suspects.load(v.suspect)  # this host fetches it (pinned) if it lacks it
    except suspects.SuspectChanged as e:
        with transaction.atomic():
            _fail(v, "suspect_changed", str(e))
            _record(row, {"status": ERROR, "error": str(e)})
        log.info("check v=%s c=%s refused: %s", v.public_id, c.digest[:12], e)
        return
    except FetchError as e:
        if not e.permanent:
            return _retry_or_give_up(task, row, e)
        _record(row, {"status": ERROR, "error": f"could not fetch the suspect on this host: {e}"})
        return
    try:
        scheme = schemes.get(c.scheme)
        key = scheme.Key.from_bytes(unseal(settings.HALLMARK_MASTER_KEY, bytes(c.sealed_key)))
        result = scheme.test(suspect, key)
    except SoftTimeLimitExceeded:
        _record(row, {"status": ERROR, "error": "the check exceeded its time limit "
                      f"({settings.CELERY_TASK_SOFT_TIME_LIMIT} s); raise HALLMARK_TASK_SOFT_TIME_LIMIT"})
        return
    except FetchError as e:  # a black-box check's endpoint
        if not e.permanent:
            return _retry_or_give_up(task, row, e)
        _record(row, {"status": ERROR, "error": f"{type(e).__name__}: {e}"})
        return
    except (OperationalError, InterfaceError):
        raise
    except Exception as e:  # one broken check must not block the verification's report
        log.exception("check v=%s c=%s failed", v.public_id, c.digest[:12])
        _record(row, {"status": ERROR, "error": f"{type(e).__name__}: {e}"})
        return
    seconds = time.monotonic() - t0
    _record(row, hub.with_reads(_result_fields(result, seconds), suspect))
    log.info("check v=%s c=%s %s %s log10p=%.1f queries=%d, queued %.2fs, ran %.2fs",
             v.public_id, c.digest[:12], c.scheme, "applicable" if result.applicable else "n/a",
             result.log10_p, result.queries, wait, seconds)


# Every field a finished check row sets, with the value a row gets when its outcome omits it
# (CheckResult.store writes the same fields to every row of a batch).
_FINISHED: dict[str, object] = {"status": ERROR, "statistic": None, "n": None, "log10_p": None, "null": "",
             "queries": 0, "claim": "", "details": {}, "may_attribute": True, "error": "",
             "seconds": None}


@app.task(name="workers.check_batch", bind=True, **_RETRY)
def check_batch(self, verification_id: int, batch: int) -> None:  # type: ignore[no-untyped-def]
    """Test one batch of commitments against the suspect, loaded once.

    Idempotent: the run claims only rows still pending (or running under a lapsed lease) and
    records only rows it still holds, so a redelivered message, a sweeper's single re-drive
    of a row, or a second run after a dead worker never stores or counts a row twice.
    """
    t0 = time.monotonic()
    v = Verification.objects.select_related("suspect").get(pk=verification_id)
    if v.status != CHECKING:
        return  # finished, or the verification failed meanwhile
    runner = uuid.uuid4().hex
    if not CheckResult.claim_batch(v.pk, batch, lease.duration(), runner):
        return  # every row is finished or held by a live worker
    try:
        with lease.rows_held(CheckResult, runner=runner, status=RUNNING):
            _check_batch(self, v, batch, runner, t0)
    except INFRASTRUCTURE:
        _released(lambda: CheckResult.release_batch(runner))
        raise


def _check_batch(task, v: Verification, batch: int, runner: str, t0: float) -> None:  # type: ignore[no-untyped-def]
    rows = list(CheckResult.objects.filter(runner=runner, status=RUNNING).values_list(
        "pk", "commitment_id", "scheme", "attempts"))
    wait = (timezone.now() - (v.fetched_at or v.submitted_at)).total_seconds()
    lost: dict[int, dict[str, object]] = {pk: {"error": f"the worker was lost {attempts - 1} times running this check (out "
                 "of memory or killed); it was not retried again"}
            for pk, _, _, attempts in rows if attempts > settings.HALLMARK_CHECK_MAX_LOST}
    live = [(pk, c, s) for pk, c, s, _ in rows if pk not in lost]
    try:
        suspect = suspects.load(v.suspect)  # this host fetches it (pinned) if it lacks it
    except suspects.SuspectChanged as e:
        with transaction.atomic():
            _fail(v, "suspect_changed", str(e))
            _record_batch(v, runner, {pk: {"error": str(e)} for pk, _, _, _ in rows})
        log.info("check v=%s batch %d refused: %s", v.public_id, batch, e)
        return
    except FetchError as e:
        if not e.permanent and task.request.retries < task.max_retries:
            _released(lambda: CheckResult.release_batch(runner))
            raise task.retry(countdown=_backoff(task.request.retries)) from None
        _record_batch(v, runner, {pk: {"error": f"could not fetch the suspect on this host: {e}"}
                                  for pk, _, _, _ in rows})
        return
    try:
        outcomes = _run_batch(live, suspect)
    except FetchError as e:  # a black-box endpoint said "try later": retry, never a result
        if task.request.retries < task.max_retries:
            _released(lambda: CheckResult.release_batch(runner))
            raise task.retry(countdown=_backoff(task.request.retries)) from None
        outcomes = {pk: f"the suspect's server kept failing after {task.max_retries} retries: "
                    f"{e}" for pk, _, _ in live}
    seconds = (time.monotonic() - t0) / max(len(rows), 1)  # each row's share of the batch
    fields: dict[int, dict[str, object]] = {
        **lost, **{pk: hub.with_reads(_outcome_fields(o, seconds), suspect)
                   for pk, o in outcomes.items()}}
    _record_batch(v, runner, fields)
    ran = sum(1 for f in fields.values() if f.get("status") == CHECKED)
    log.info("check v=%s batch %d: %d checks (%d ran, %d errors), queued %.2fs, ran %.2fs",
             v.public_id, batch, len(rows), ran, sum(1 for f in fields.values()
                                                      if f.get("status", ERROR) == ERROR),
             wait, time.monotonic() - t0)


def _run_batch(live: list[tuple[int, int, str]], suspect: Any) -> dict[int, scan.Outcome | str]:
    """Each row's outcome; a str is an error message. Keys are unsealed and parsed here (a
    key that no longer parses is that row's error); `scan.test_batch` tests each scheme's
    keys together. A time limit or an endpoint's permanent refusal mid-batch keeps the
    outcomes so far and fails the rest; an endpoint's "try later" (FetchError, transient)
    propagates so that the batch is retried."""
    blobs = dict(Commitment.objects.filter(pk__in=[c for _, c, _ in live]).values_list(
        "pk", "sealed_key"))
    out: dict[int, scan.Outcome | str] = {}
    try:
        for scheme, group in groupby(live, key=lambda r: r[2]):
            rows = list(group)
            try:
                module = schemes.get(scheme)
            except schemes.UnknownScheme as e:  # not installed on this host: each row's error
                out.update((pk, e) for pk, _, _ in rows)
                continue
            members, keys = [], []
            for pk, c, _ in rows:
                try:
                    keys.append(module.Key.from_bytes(
                        unseal(settings.HALLMARK_MASTER_KEY, bytes(blobs[c]))))
                    members.append(pk)
                except Exception as e:  # noqa: BLE001 - that key's error row
                    out[pk] = e
            results = scan.test_batch(scheme, suspect, keys, reraise=(
                SoftTimeLimitExceeded, OperationalError, InterfaceError, FetchError))
            out.update(zip(members, results, strict=True))
    except SoftTimeLimitExceeded:
        for pk, _, _ in live:
            out.setdefault(pk, "the check batch exceeded its time limit "
                           f"({settings.CELERY_TASK_SOFT_TIME_LIMIT} s); raise "
                           "HALLMARK_TASK_SOFT_TIME_LIMIT or lower HALLMARK_SCAN_BATCH")
    except FetchError as e:
        if not e.permanent:
            raise  # the whole batch is retried
        for pk, _, _ in live:  # the endpoint refused for good: the rest cannot run
            out.setdefault(pk, f"{type(e).__name__}: {e}")
    return out


def _outcome_fields(o: scan.Outcome | str, seconds: float) -> dict[str, object]:
    if isinstance(o, TestResult):
        return _result_fields(o, seconds)
    return {"error": o if isinstance(o, str) else f"{type(o).__name__}: {o}", "seconds": seconds}


def _record_batch(v: Verification, runner: str, fields: dict[int, dict[str, object]]) -> None:
    """Store the outcomes of the rows run `runner` still holds (locked), once, and count them;
    the batch that completes the count enqueues finalize."""
    with transaction.atomic():
        mine = list(CheckResult.objects.select_for_update().filter(
            runner=runner, status=RUNNING, pk__in=list(fields)).values_list("pk", flat=True))
        if not mine:
            return  # recorded already, or taken over by another run
        now = timezone.now()
        CheckResult.store({pk: {**_FINISHED, **fields[pk], "finished_at": now, "lease_until": None}
                           for pk in mine})
        queries = sum(int(fields[pk].get("queries", 0)) for pk in mine)  # type: ignore[call-overload]
        if v.count_check_done(len(mine), queries) and v.claim(CHECKING, FINALIZING):
            transaction.on_commit(lambda: dispatch.finalize(v.pk))


@app.task(name="workers.finalize", bind=True, **_RETRY)
def finalize(self, verification_id: int) -> None:  # type: ignore[no-untyped-def]
    """Aggregate, sign, log and store the report, exactly once."""
    t0 = time.monotonic()
    v = Verification.objects.select_related("suspect", "target").get(pk=verification_id)
    if v.status != FINALIZING:
        return
    if v.unfinished_checks():  # never sign while checks are missing: back to the sweeper
        v.claim(FINALIZING, CHECKING)
        log.warning("finalize v=%s: %d checks unfinished, back to checking", v.public_id,
                    v.unfinished_checks())
        return
    if not v.claim_finalize(lease.duration()):
        return  # a live worker is finalizing it
    try:
        with lease.held(Verification, v.pk, status=FINALIZING):
            if v.finished_at is None:
                v.finished_at = timezone.now()
                Verification.objects.filter(pk=v.pk).update(finished_at=v.finished_at)
            report = reporting.finalize(v)
            v.claim(FINALIZING, DONE)
    except INFRASTRUCTURE:
        _released(v.release)
        raise
    log.info("finalize v=%s report=%s log=%s in %.2fs", v.public_id, report.public_id,
             report.log_index, time.monotonic() - t0)


@app.task(name="workers.sweep")
def sweep() -> None:
    """Re-drive every verification step that no live worker holds (run by Celery beat)."""
    t0 = time.monotonic()
    sent = sweeper.sweep()
    if any(sent.values()):
        log.info("sweep re-drove %s in %.2fs", ", ".join(f"{n} {k}" for k, n in sent.items() if n),
                 time.monotonic() - t0)
