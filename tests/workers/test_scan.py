"""A scan that scales: only candidates get a row and a test, in batches; the rest are counted;
Holm runs over the tests that ran; a redelivered or re-driven batch never records twice.

Tasks run in this process on the real database; what they send goes through the real Redis
broker to a private queue and is read back (tests/broker.py). A real worker killed mid-scan:
tests/integration/test_faults.py.
"""
from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
import torch
from celery.exceptions import Retry
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from registry import reporting
from registry.models import CheckResult, Commitment, RegisteredModel, Report, Verification
from registry.submission import submit
from tests.broker import use_broker
from tests.keys import uchida_key_blob
from tests.registry.conftest import make_actor
from tests.workers.test_sweeper import later, run_messages, signed_predicate, suspect_url
from verifier import toy
from verifier.audit import audit
from verifier.schemes import trigger_set, uchida
from verifier.stats import holm
from workers import sweeper, tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def cache(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.HALLMARK_CACHE_DIR = tmp_path / "host-a"
    return settings.HALLMARK_CACHE_DIR


def _elsewhere_blob(seed: int) -> bytes:
    """An uchida key on a layer shape the toy MLP does not have (96 × 1024)."""
    return uchida.generate_key(uchida.Params(bits=128, layers=("w",), shapes=((96, 1024),)),
                               seed).to_bytes()


def _black_box_blob(seed: int) -> bytes:
    return trigger_set.generate_key(trigger_set.Params(n=100, variant="keyed_noise",
                                                       classes=10), seed).to_bytes()


def _register(actor, blobs: list[bytes], name: str = "m") -> str:  # type: ignore[no-untyped-def]
    model_id = actor.api.post("/api/models/", {"name": name}, format="json").json()["id"]
    for blob in blobs:
        f = io.BytesIO(blob)
        f.name = "k"
        r = actor.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
        assert r.status_code == 201, r.content
    return str(model_id)


def _registry(n_candidates: int, n_elsewhere: int = 0, n_black_box: int = 0):  # type: ignore[no-untyped-def]
    alice = make_actor("alice")
    _register(alice, [uchida_key_blob(seed=s) for s in range(n_candidates)]
              + [_elsewhere_blob(100 + s) for s in range(n_elsewhere)]
              + [_black_box_blob(200 + s) for s in range(n_black_box)])
    return alice


def _fetched(alice, server, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """Submit and fetch; returns the verification and the batch messages the fetch sent."""
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, suspect_url(server))
    with use_broker() as sent:
        with django_capture_on_commit_callbacks(execute=True):
            tasks.fetch.run(v.pk)
        messages = sent.take()
    v.refresh_from_db()
    return v, messages


def test_a_scan_tests_only_candidates_in_batches_and_counts_the_rest(
        server, cache, settings, django_capture_on_commit_callbacks):
    settings.HALLMARK_SCAN_BATCH, settings.HALLMARK_SCAN_SPREAD = 2, 1
    alice = _registry(n_candidates=5, n_elsewhere=3, n_black_box=2)

    v, messages = _fetched(alice, server, django_capture_on_commit_callbacks)

    assert v.status == "checking" and v.checks_expected == 5 and CheckResult.objects.count() == 5
    assert messages == [("workers.check_batch", [v.pk, b]) for b in (0, 1, 2)]
    assert sorted(CheckResult.objects.values_list("batch", flat=True)) == [0, 0, 1, 1, 2]
    assert set(CheckResult.objects.values_list("commitment__scheme", "commitment__index_shape")) \
        == {("uchida", "96x96")}  # fc2 (96, 96) is the toy MLP's largest host layer
    assert v.scan["commitments"] == 10 and v.scan["candidates"] == 5
    assert v.scan["not_applicable"] == {"trigger_set": 2, "uchida": 3}
    assert v.scan["profile"] == {"weights": True, "predict": False,
                                 # stored shapes, and 2-D ones transposed (Conv1D layout)
                                 "shapes": ["10", "10x96", "64x96", "96", "96x10", "96x64",
                                            "96x96"]}
    with use_broker() as next_step:
        run_messages(messages, django_capture_on_commit_callbacks)
        assert next_step.take() == [("workers.finalize", [v.pk])]  # sent once, by the last batch
    tasks.finalize.run(v.pk)
    v.refresh_from_db()
    assert v.status == "done" and v.progress == "5/5"
    p = signed_predicate(v)
    assert p["tests_run"] == 5 and len(p["checks"]) == 5
    assert p["scan"] == {k: v.scan[k] for k in ("log_index", "profile", "commitments",
                                                "candidates", "not_applicable")}
    assert p["verdict"]["outcome"] == "not attributed"
    # not significant: compact rows, each scheme's claim once
    assert p["claims"] == {"uchida": uchida.CLAIM}
    assert all("claim" not in c and "details" not in c and c["decision"] == "not attributed"
               and {"statistic", "n", "log10_p", "p_value", "alpha", "forgery_bits"} <= set(c)
               for c in p["checks"])
    audited = audit(reporting.report_document(Report.objects.get(verification=v)))
    assert audited.ok, audited.failure  # the scan's counts add up, Holm recomputes
    page = Client().get(f"/reports/{Report.objects.get(verification=v).public_id}/")
    assert page.status_code == 200  # the page states each compact row's claim from "claims"
    assert page.content.decode().count(f"it would prove: {escape(uchida.CLAIM)[:60]}") == 5


def test_a_small_scan_is_spread_over_several_batches_for_several_workers(
        server, cache, settings, django_capture_on_commit_callbacks):
    settings.HALLMARK_SCAN_BATCH, settings.HALLMARK_SCAN_SPREAD = 250, 2
    settings.HALLMARK_SCAN_MIN_BATCH = 1
    alice = _registry(n_candidates=5)
    v, messages = _fetched(alice, server, django_capture_on_commit_callbacks)
    assert messages == [("workers.check_batch", [v.pk, 0]), ("workers.check_batch", [v.pk, 1])]
    assert sorted(CheckResult.objects.values_list("batch", flat=True)) == [0, 0, 0, 1, 1]


def test_a_small_verification_is_one_batch_holding_every_scheme(
        server, cache, settings, django_capture_on_commit_callbacks):
    settings.HALLMARK_SCAN_BATCH, settings.HALLMARK_SCAN_SPREAD = 250, 8
    settings.HALLMARK_SCAN_MIN_BATCH = 4
    alice = make_actor("alice")
    model_id = _register(alice, [uchida_key_blob(seed=s) for s in range(3)] + [_black_box_blob(9)])
    target = RegisteredModel.objects.get(public_id=model_id)
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, suspect_url(server), target=target)
    with use_broker() as sent:
        with django_capture_on_commit_callbacks(execute=True):
            tasks.fetch.run(v.pk)
        messages = sent.take()
        assert messages == [("workers.check_batch", [v.pk, 0])]  # 4 checks, 2 schemes: 1 task
        assert sorted(CheckResult.objects.values_list("scheme", "batch")) == [
            ("trigger_set", 0), ("uchida", 0), ("uchida", 0), ("uchida", 0)]
        run_messages(messages, django_capture_on_commit_callbacks)
        assert sent.take() == [("workers.finalize", [v.pk])]
    # each scheme tested in its own way: uchida on the weights; trigger_set needs predict()
    assert sorted(CheckResult.objects.values_list("scheme", "status")) == [
        ("trigger_set", "not applicable"), ("uchida", "checked"), ("uchida", "checked"),
        ("uchida", "checked")]


def test_holm_runs_over_the_tests_that_ran_not_over_the_registry(
        server, cache, django_capture_on_commit_callbacks):
    alice = _registry(n_candidates=3, n_elsewhere=4)
    v, messages = _fetched(alice, server, django_capture_on_commit_callbacks)
    run_messages(messages, django_capture_on_commit_callbacks)
    tasks.finalize.run(v.pk)

    rows = signed_predicate(Verification.objects.get(pk=v.pk))["checks"]
    expected = holm([r["log10_p"] for r in rows], settings.HALLMARK_ALPHA)
    assert [r["alpha"] for r in rows] == [d.alpha for d in expected]
    assert min(r["alpha"] for r in rows) == pytest.approx(settings.HALLMARK_ALPHA / 3)  # m = 3


def test_a_batch_delivered_twice_or_taken_over_after_its_worker_died_records_each_row_once(
        server, cache, settings, django_capture_on_commit_callbacks):
    settings.HALLMARK_SCAN_BATCH, settings.HALLMARK_SCAN_SPREAD = 3, 1
    alice = _registry(n_candidates=3)
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, suspect_url(server))
    with django_capture_on_commit_callbacks(execute=False):
        tasks.fetch.run(v.pk)  # the batch message is lost with its worker
    # A worker claimed the batch and is alive: a second delivery leaves its rows alone.
    assert CheckResult.claim_batch(v.pk, 0, timedelta(seconds=60), "first") == 3
    with django_capture_on_commit_callbacks(execute=True) as sent:
        tasks.check_batch.run(v.pk, 0)
    assert sent == [] and set(CheckResult.objects.values_list("runner", "status")) == {
        ("first", "running")}
    # Then it dies: its lease lapses; the sweeper re-drives the batch (once, however many
    # sweepers run), the lost message comes back too, and one row is re-driven alone.
    CheckResult.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
    with use_broker() as redriven:
        assert sweeper.sweep(now=later())["check"] == 3
        assert sweeper.sweep(now=later())["check"] == 0
        assert redriven.take() == [("workers.check_batch", [v.pk, 0])]
    single = CheckResult.objects.order_by("pk").values_list("commitment_id", flat=True)[0]
    with use_broker() as next_step:
        run_messages([("workers.check_batch", [v.pk, 0]), ("workers.check", [v.pk, single]),
                      ("workers.check_batch", [v.pk, 0])], django_capture_on_commit_callbacks)
        assert next_step.take() == [("workers.finalize", [v.pk])]
    v.refresh_from_db()
    assert v.checks_done == v.checks_expected == 3
    assert list(CheckResult.objects.values_list("status", "attempts").distinct()) == [("checked", 2)]
    tasks.finalize.run(v.pk)
    assert len(signed_predicate(v)["checks"]) == 3


def test_a_batch_lost_too_often_is_recorded_as_errors_and_the_verdict_is_inconclusive(
        server, cache, django_capture_on_commit_callbacks):
    alice = _registry(n_candidates=2)
    v, messages = _fetched(alice, server, django_capture_on_commit_callbacks)
    CheckResult.objects.update(attempts=settings.HALLMARK_CHECK_MAX_LOST)  # lost that often
    run_messages(messages, django_capture_on_commit_callbacks)
    tasks.finalize.run(v.pk)

    assert set(CheckResult.objects.values_list("status", flat=True)) == {"error"}
    assert "lost 3 times" in CheckResult.objects.first().error  # type: ignore[union-attr]
    verdict = signed_predicate(v)["verdict"]
    assert verdict["outcome"] == "inconclusive" and verdict["checks_missing"] == 2


def test_a_targeted_verification_still_gives_every_commitment_of_its_model_a_row(
        server, cache, django_capture_on_commit_callbacks):
    alice = make_actor("alice")
    model_id = _register(alice, [uchida_key_blob(seed=1), _elsewhere_blob(2)])
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, suspect_url(server),
                   target=RegisteredModel.objects.get(public_id=model_id))
    with use_broker() as sent:
        with django_capture_on_commit_callbacks(execute=True):
            tasks.fetch.run(v.pk)
        run_messages(sent.take(), django_capture_on_commit_callbacks)
    tasks.finalize.run(v.pk)
    v.refresh_from_db()

    assert (v.scan == {} and "scan" not in signed_predicate(v)
            and "claims" not in signed_predicate(v))
    assert all("claim" in c and "details" in c for c in signed_predicate(v)["checks"])  # in full
    decisions = sorted(r["decision"] for r in signed_predicate(v)["checks"])
    assert decisions == ["not applicable", "not attributed"]


def test_an_empty_registry_scan_is_signed_with_zero_candidates(
        server, cache, django_capture_on_commit_callbacks):
    alice = make_actor("alice")
    v, messages = _fetched(alice, server, django_capture_on_commit_callbacks)
    assert messages == [("workers.finalize", [v.pk])] and v.status == "finalizing"
    tasks.finalize.run(v.pk)
    assert signed_predicate(v)["scan"]["commitments"] == 0 and signed_predicate(v)["tests_run"] == 0


def test_commitments_are_indexed_at_upload_by_what_they_need() -> None:
    alice = make_actor("alice")
    _register(alice, [uchida_key_blob(seed=1), _elsewhere_blob(2), _black_box_blob(3)])
    got = sorted(Commitment.objects.values_list("scheme", "needs", "index_shape"))
    assert got == [("trigger_set", "predict", ""), ("uchida", "weights", "96x1024"),
                   ("uchida", "weights", "96x96")]
    torch.manual_seed(0)
    assert Commitment.objects.get(index_shape="96x96").requirement == {
        "access": "weights",
        "shapes": [list(t.shape) for n, t in toy.MLP().state_dict().items()
                   if n.endswith("weight")]}


def test_an_endpoint_that_says_try_later_mid_batch_is_retried_never_recorded(
        server, cache, settings, django_capture_on_commit_callbacks):
    import numpy as np

    from tests.hostile.loopback import send, serve_oip

    busy = [True]

    def infer(h, req) -> None:  # type: ignore[no-untyped-def]
        if busy[0]:
            send(h, 503, b"")  # overloaded: try again later
            return
        inp = json.loads(req.body)["inputs"][0]
        y = np.zeros((inp["shape"][0], 10), dtype=np.float32)
        send(h, 200, json.dumps({"outputs": [{"name": "logits", "shape": list(y.shape),
                                              "datatype": "FP32", "data": y.ravel().tolist()}]}
                                ).encode())

    settings.HALLMARK_SCAN_SPREAD = 1
    alice = _registry(n_candidates=1, n_black_box=2)  # the uchida key needs weights
    with django_capture_on_commit_callbacks(execute=False):
        v = submit(alice.owner, serve_oip(server, infer=infer))
    with django_capture_on_commit_callbacks(execute=False):
        tasks.fetch.run(v.pk)
    v.refresh_from_db()
    assert v.checks_expected == 2 and v.scan["not_applicable"] == {"uchida": 1}
    with pytest.raises(Retry):  # a worker retries it with backoff and jitter
        tasks.check_batch.run(v.pk, 0)
    rows = CheckResult.objects.filter(verification=v)
    assert list(rows.values_list("status", "attempts", "error").distinct()) == [("pending", 0, "")]
    busy[0] = False
    with django_capture_on_commit_callbacks(execute=False):
        tasks.check_batch.run(v.pk, 0)  # the retry, once the endpoint answers
    assert list(rows.values_list("status", "attempts").distinct()) == [("checked", 1)]
    v.refresh_from_db()
    assert v.checks_done == 2 and v.queries == 200
