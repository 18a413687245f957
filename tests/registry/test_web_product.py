"""Conventions a user of the web product relies on: docs, pagination, health, read-only
evidence in the admin, downloads that audit, forms that never 500."""
from __future__ import annotations

import json
import subprocess
import sys

from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from registry.models import LogEntry, RegisteredModel
from tests.registry.conftest import make_actor


def test_the_openapi_schema_validates(tmp_path):
    out = tmp_path / "schema.yaml"
    r = subprocess.run([sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn",
                        "--file", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "/api/verifications/" in out.read_text()


def test_the_api_docs_page_is_served_with_local_assets(db):
    r = Client().get("/api/docs/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "swagger-ui" in html and "cdn" not in html.lower()
    asset = next(part.split('"')[0] for part in html.split('src="')[1:] if "swagger" in part)
    assert Client().get(asset).status_code == 200  # served by WhiteNoise, offline


def test_lists_are_paginated(alice):
    for i in range(3):
        assert alice.api.post("/api/models/", {"name": f"m{i}"}, format="json").status_code == 201
    page = alice.api.get("/api/models/?page_size=2&page=1").json()
    assert page["count"] == 3 and len(page["results"]) == 3  # page size is the server's
    assert page["next"] is None and page["previous"] is None


def test_health_names_the_component_that_is_down(db, settings):
    from registry.celery_app import app

    old = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:9/0"  # a closed loopback port: the broker is down
    try:
        r = Client().get("/health")
    finally:
        app.conf.broker_url = old
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("down")
    assert body["code"] == "unhealthy" and "broker" in body["detail"]


def test_the_log_and_reports_are_read_only_in_the_admin(db):
    admin = User.objects.create_superuser("root", password="admin password 1")
    alice = make_actor("alice")
    assert alice.api.post("/api/models/", {"name": "m"}, format="json").status_code == 201
    web = Client()
    web.force_login(admin)
    entry = LogEntry.objects.first()
    assert web.get("/admin/registry/logentry/").status_code == 200
    assert web.get("/admin/registry/logentry/add/").status_code == 403
    assert web.post(f"/admin/registry/logentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert LogEntry.objects.filter(pk=entry.pk).exists()
    for page in ("report", "checkpoint", "commitment", "registeredmodel", "licence"):
        assert web.get(f"/admin/registry/{page}/add/").status_code == 403


def test_a_superuser_without_an_owner_record_gets_a_page_not_a_500(db):
    admin = User.objects.create_superuser("root", password="admin password 1")
    web = Client()
    web.force_login(admin)
    for path in ("/dashboard/", "/models/new/", "/verifications/new/"):
        r = web.get(path)
        assert r.status_code == 403 and "no owner identity" in r.content.decode()


def test_a_duplicate_name_and_version_is_a_form_error(alice):
    web = Client()
    web.force_login(alice.user)
    form = {"name": "digits", "version": "1", "description": ""}
    assert web.post("/models/new/", form).status_code == 302
    r = web.post("/models/new/", form)
    assert r.status_code == 200 and "bump the version" in r.content.decode()
    assert RegisteredModel.objects.filter(name="digits").count() == 1


def test_the_model_form_refuses_a_digest_that_is_not_sha256(alice):
    web = Client()
    web.force_login(alice.user)
    r = web.post("/models/new/", {"name": "m", "version": "1", "artifact_sha256": "not-a-hash"})
    assert r.status_code == 200 and "64 lowercase hex" in r.content.decode()
    assert not RegisteredModel.objects.exists()


def test_unknown_pages_get_a_plain_404_and_api_paths_a_problem(db):
    r = Client().get("/no/such/page/")
    assert r.status_code == 404 and b"Request id" in r.content and b"Traceback" not in r.content
    r = APIClient().get("/api/no/such/thing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_serve_refuses_debug_pages_off_loopback(tmp_path):
    env = {"HALLMARK_DATA_DIR": str(tmp_path), "DJANGO_DEBUG": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "manage.py", "serve", "--host", "0.0.0.0"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "refusing to serve with DJANGO_DEBUG" in r.stderr


def test_the_report_download_is_the_audit_json_as_an_attachment(db):
    # The full flow (a signed report downloaded and audited) runs in the browser test; here the
    # route's contract on a missing report.
    r = Client().get("/reports/00000000-0000-4000-8000-000000000000/report.json")
    assert r.status_code == 404
    assert json.loads(APIClient().get(
        "/api/reports/00000000-0000-4000-8000-000000000000").content)["status"] == 404
