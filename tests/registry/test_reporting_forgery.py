"""A report attributes only from checks that pass Holm, cost at least the forgery floor, and may
name an owner; each row states its forgery cost and its key's screening; the audit agrees."""
from __future__ import annotations

import io

import pytest
import torch
from django.utils import timezone

from registry import reporting
from registry.models import CHECKED, FINALIZING, CheckResult, Commitment, Suspect, Verification
from tests.keys import uchida_key_blob
from verifier import toy
from verifier.audit import audit
from verifier.schemes import trigger_set

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core


def _commit(actor, blob: bytes) -> Commitment:
    model_id = actor.api.post("/api/models/", {"name": f"m{Commitment.objects.count()}"},
                              format="json").json()["id"]
    f = io.BytesIO(blob)
    f.name = "key"
    r = actor.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")
    assert r.status_code == 201, r.json()
    return Commitment.objects.get(digest=r.json()["digest"])


def _report(actor, checks: list[tuple[Commitment, float, bool]]) -> dict:
    """Finalize a verification whose checks ran with these (commitment, log10 p, may_attribute)."""
    suspect = Suspect.objects.create(url="http://127.0.0.1/suspect.onnx", sha256="ab" * 32,
                                     size=10, format="onnx")
    v = Verification.objects.create(suspect=suspect, requested_by=actor.owner, status=FINALIZING,
                                    checks_expected=len(checks), checks_done=len(checks))
    now = timezone.now()  # after submitted_at: times stay in order
    Suspect.objects.filter(pk=suspect.pk).update(fetched_at=now)
    Verification.objects.filter(pk=v.pk).update(fetched_at=now, finished_at=now)
    v.refresh_from_db()
    for c, log10_p, may in checks:
        CheckResult.objects.create(verification=v, commitment=c, scheme=c.scheme, status=CHECKED,
                                   statistic=1.0, n=128, log10_p=log10_p, null="exact",
                                   may_attribute=may, finished_at=now)
    doc = reporting.report_document(reporting.finalize(v))
    result = audit(doc)
    assert result.ok, result.failure
    return result.statement["predicate"]


def test_a_check_between_the_holm_threshold_and_the_floor_is_significant_but_forgeable(alice):
    pred = _report(alice, [(_commit(alice, uchida_key_blob()), -20.0, True)])
    row = pred["checks"][0]
    assert row["decision"] == "significant, forgeable"
    assert row["forgery_bits"] == pytest.approx(66.44, abs=0.01)
    assert pred["min_forgery_bits"] == 80
    assert pred["verdict"]["attributed"] is False and pred["verdict"]["matching_commitments"] == []
    assert all(not o["signs"] for o in pred["owners"] if o["keyid"] != alice.owner.keyid)


def test_a_check_beyond_the_floor_attributes(alice):
    pred = _report(alice, [(_commit(alice, uchida_key_blob()), -30.0, True)])
    assert pred["checks"][0]["decision"] == "attributed"
    assert pred["checks"][0]["forgery_bits"] == pytest.approx(99.66, abs=0.01)
    assert pred["verdict"]["attributed"] and pred["verdict"]["owner_keyid"] == alice.owner.keyid


def test_integrity_only_evidence_never_attributes(alice):
    pred = _report(alice, [(_commit(alice, uchida_key_blob()), -300.0, False)])
    assert pred["checks"][0]["decision"] == "integrity only"
    assert pred["checks"][0]["may_attribute"] is False
    assert pred["verdict"]["attributed"] is False


def test_the_verdict_attributes_only_from_attributing_rows(alice, outsider):
    weak = _commit(outsider, uchida_key_blob(1))  # forgeable match, registered first
    strong = _commit(alice, uchida_key_blob(2))
    pred = _report(alice, [(weak, -12.0, True), (strong, -90.0, True)])
    assert [r["decision"] for r in pred["checks"]] == ["significant, forgeable", "attributed"]
    assert pred["verdict"]["earliest_commitment"] == strong.digest
    assert pred["verdict"]["owner_keyid"] == alice.owner.keyid and not pred["verdict"]["disputed"]


def test_an_operator_floor_changes_the_decision_and_is_stated(alice, settings):
    settings.HALLMARK_MIN_FORGERY_BITS = 60
    pred = _report(alice, [(_commit(alice, uchida_key_blob()), -20.0, True)])
    assert pred["min_forgery_bits"] == 60 and pred["checks"][0]["decision"] == "attributed"


def test_a_p_value_of_zero_costs_infinite_work(alice):
    pred = _report(alice, [(_commit(alice, uchida_key_blob()), -1e308, True)])
    assert pred["checks"][0]["forgery_bits"] == "inf"
    assert pred["checks"][0]["decision"] == "attributed"


def test_every_row_says_how_its_key_was_screened(alice):
    split = toy.digits(seed=0)
    torch.manual_seed(3)
    tkey = trigger_set.generate_key(trigger_set.Params(n=40), 3, model=toy.MLP(),
                                    data=(split.x_held, split.y_held))
    unscreened = _commit(alice, tkey.to_bytes())  # no panel in this database
    seeded = _commit(alice, uchida_key_blob())
    pred = _report(alice, [(unscreened, -50.0, True), (seeded, -1.0, True)])
    by_digest = {r["commitment"]: r for r in pred["checks"]}
    assert by_digest[unscreened.digest]["screening"] == "unscreened"
    assert by_digest[seeded.digest]["screening"] == "not needed"
