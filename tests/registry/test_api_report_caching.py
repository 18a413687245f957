"""GET /api/reports/<id> and GET /api/log/checkpoint are served from stored bytes, with strong
ETags, Cache-Control and 304 on If-None-Match, in at most two SQL statements."""
from __future__ import annotations

import hashlib
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from registry import reporting
from registry.models import CHECKED, Report, Suspect, Verification
from registry.registration import add_commitment, register_model
from tests.keys import uchida_key_blob
from tests.registry.conftest import Actor
from verifier.audit import audit
from verifier.evidence import requests
from verifier.evidence.owners import countersign as client_countersign
from verifier.evidence.report import render_report


def _report(actor: Actor, seed: int = 0) -> Report:
    """A finished, signed verification of a suspect against a new model of `actor`'s."""
    name, blob, identity = f"digits-{seed}", uchida_key_blob(seed), actor.identity
    sig = None if identity is None else requests.sign_request(
        identity, requests.model_request(name, "1"))
    model = register_model(actor.owner, name=name, owner_signature=sig)
    csig = None if identity is None else requests.sign_request(identity, requests.commitment_request(
        str(model.public_id), "uchida", hashlib.sha256(blob).hexdigest()))
    c = add_commitment(model, blob, owner_signature=csig)
    suspect = Suspect.objects.create(url="http://127.0.0.1/stolen.safetensors",
                                     sha256=hashlib.sha256(b"stolen").hexdigest(), size=6,
                                     format="safetensors", fetched_at=timezone.now())
    v = Verification.objects.create(suspect=suspect, requested_by=actor.owner, target=model,
                                    status="done", checks_expected=1, checks_done=1)
    v.fetched_at = v.finished_at = timezone.now()  # after submitted_at
    v.save()
    v.checks.create(commitment=c, scheme="uchida", status=CHECKED, statistic=64, n=64,
                    log10_p=-19.3, null="binomial(64, 1/2)", claim="the bits match")
    return reporting.finalize(v)


def _get(url: str, **headers: str) -> tuple[object, int]:
    with CaptureQueriesContext(connection) as queries:
        r = APIClient().get(url, **headers)
    return r, len(queries)


@pytest.fixture
def revalidate(monkeypatch):
    """Every GET checks the report's ETag in the database (no freshness window)."""
    monkeypatch.setattr(reporting, "FRESH_SECONDS", 0.0)


@pytest.mark.django_db
def test_a_report_is_served_from_its_stored_bytes_in_two_queries_then_one(alice, revalidate):
    report = _report(alice)
    report.refresh_from_db()
    r, n = _get(f"/api/reports/{report.public_id}")
    assert r.status_code == 200 and n == 2  # its ETag, then its bytes
    again, n = _get(f"/api/reports/{report.public_id}")
    assert again.content == r.content and n == 1  # its ETag: the bytes are in memory
    assert r.content == bytes(report.document)
    assert r["ETag"] == f'"{hashlib.sha256(r.content).hexdigest()}"' == report.etag
    assert r["Cache-Control"] == "public, max-age=60"
    assert r["Content-Type"] == "application/json"
    res = audit(r.content, strict_bytes=True)
    assert res.ok, res.failure


@pytest.mark.django_db
def test_within_the_freshness_window_a_process_serves_a_report_without_a_query(alice):
    report = _report(alice)
    first = APIClient().get(f"/api/reports/{report.public_id}")
    r, n = _get(f"/api/reports/{report.public_id}")
    assert (r.status_code, r.content, n) == (200, first.content, 0)
    r, n = _get(f"/api/reports/{report.public_id}", HTTP_IF_NONE_MATCH=first["ETag"])
    assert (r.status_code, n) == (304, 0)


@pytest.mark.django_db
def test_the_stored_document_is_the_one_built_at_signing_even_after_the_log_grows(alice):
    report = _report(alice)
    first = APIClient().get(f"/api/reports/{report.public_id}").content
    _report(alice, 1)  # the log grows: the first report's document stays as it was
    assert APIClient().get(f"/api/reports/{report.public_id}").content == first
    size = audit(first).checkpoint.size
    assert size == report.log_index + 1  # proved against the checkpoint published at signing


@pytest.mark.django_db
def test_it_answers_304_when_if_none_match_names_the_report_etag(alice, revalidate):
    report = _report(alice)
    url = f"/api/reports/{report.public_id}"
    etag = APIClient().get(url)["ETag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r, n = _get(url, HTTP_IF_NONE_MATCH=header)
        assert (r.status_code, r.content, r["ETag"], n) == (304, b"", etag, 1), header
    r, _ = _get(url, HTTP_IF_NONE_MATCH='"another-version"')
    assert r.status_code == 200 and r["ETag"] == etag


@pytest.mark.django_db
def test_an_unknown_report_is_404_in_one_query(alice):
    r, n = _get("/api/reports/00000000-0000-4000-8000-000000000000")
    assert (r.status_code, n) == (404, 1)


@pytest.mark.django_db
def test_a_countersignature_changes_the_document_and_its_etag(byok):
    report = _report(byok)
    url = f"/api/reports/{report.public_id}"
    before = APIClient().get(url)
    envelope = json.loads(report.envelope)
    r = byok.api.post(f"{url}/signatures", {"sig": client_countersign(envelope, byok.identity)},
                      format="json")
    assert r.status_code == 201, r.json()
    after, n = _get(url, HTTP_IF_NONE_MATCH=before["ETag"])
    assert after.status_code == 200 and n <= 2 and after["ETag"] != before["ETag"]
    doc = json.loads(after.content)
    assert [c["keyid"] for c in doc["countersignatures"]] == [byok.owner.keyid]
    assert audit(after.content, strict_bytes=True).ok


@pytest.mark.django_db
def test_a_report_signed_before_documents_were_stored_is_rendered_on_first_get(alice):
    report = _report(alice)
    Report.objects.filter(pk=report.pk).update(document=None, etag="")
    r = APIClient().get(f"/api/reports/{report.public_id}")
    assert r.status_code == 200 and audit(r.content, strict_bytes=True).ok
    report.refresh_from_db()
    assert bytes(report.document) == r.content and r["ETag"] == report.etag


@pytest.mark.django_db
def test_since_builds_a_fresh_document_with_a_consistency_proof(alice):
    report = _report(alice)
    kept = audit(APIClient().get(f"/api/reports/{report.public_id}").content)
    _report(alice, 1)
    r = APIClient().get(f"/api/reports/{report.public_id}?since={kept.checkpoint.size}")
    assert r.status_code == 200
    res = audit(r.content, since_checkpoint=kept.checkpoint_note, strict_bytes=True)
    assert res.ok, res.failure
    assert res.checkpoint.size > kept.checkpoint.size
    assert r.content == render_report(json.loads(r.content))


@pytest.mark.django_db
def test_since_beyond_the_log_or_not_a_number_is_a_400_naming_the_parameter(alice):
    report = _report(alice)
    for since in ("10000", "soon"):
        r = APIClient().get(f"/api/reports/{report.public_id}?since={since}")
        assert r.status_code == 400 and "since" in json.dumps(r.json()), since


@pytest.mark.django_db
def test_store_document_refuses_a_report_that_was_never_logged(alice):
    report = _report(alice)
    report.log_index = None
    with pytest.raises(ValueError, match="has no log index"):
        reporting.store_document(report)


@pytest.mark.django_db
def test_the_checkpoint_is_served_in_one_query_with_an_etag_that_changes_on_append(alice):
    _report(alice)
    APIClient().get("/api/log/checkpoint")  # signs the checkpoint of the current size
    r, n = _get("/api/log/checkpoint")
    assert (r.status_code, n) == (200, 1)
    assert r["ETag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
    assert r["Cache-Control"] == "public, no-cache"
    again, n = _get("/api/log/checkpoint", HTTP_IF_NONE_MATCH=r["ETag"])
    assert (again.status_code, n) == (304, 1)
    _report(alice, 1)
    grown = APIClient().get("/api/log/checkpoint", HTTP_IF_NONE_MATCH=r["ETag"])
    assert grown.status_code == 200 and grown["ETag"] != r["ETag"]


@pytest.mark.django_db
def test_migration_0008_backfills_the_bytes_of_reports_signed_before_it(alice):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("registry.migrations.0010_report_bytes")
    report = _report(alice)
    Report.objects.filter(pk=report.pk).update(document=None, etag="")  # as before 0008
    migration.backfill(apps, None)
    report.refresh_from_db()
    assert report.document is not None
    assert report.etag == f'"{hashlib.sha256(bytes(report.document)).hexdigest()}"'
    assert audit(bytes(report.document), strict_bytes=True).ok


@pytest.mark.django_db
def test_the_web_download_serves_the_same_stored_bytes_as_the_api(alice):
    report = _report(alice)
    api = APIClient().get(f"/api/reports/{report.public_id}")
    _report(alice, 1)  # the log grows: a fresh rendering would prove against a newer checkpoint
    web = APIClient().get(f"/reports/{report.public_id}/report.json")
    assert web.status_code == 200 and web.content == api.content
    assert web["Content-Disposition"] == (f'attachment; filename="hallmark-report-'
                                          f'{report.public_id}.json"')
    assert APIClient().get("/reports/00000000-0000-4000-8000-000000000000/report.json"
                           ).status_code == 404
