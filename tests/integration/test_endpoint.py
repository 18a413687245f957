"""A black-box suspect: an Open Inference Protocol v2 endpoint, verified by a real worker."""
from __future__ import annotations

import base64
import json

import pytest
import torch

from registry.demo import stolen_and_independent, train_marked_model
from tests.hostile.loopback import LoopbackServer, serve_oip
from tests.integration.test_flow import register_model, wait_for_verification
from tests.registry.conftest import make_actor
from verifier.cli import main as hallmark

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_endpoint_is_verified_black_box_and_the_report_counts_the_queries(
        celery_worker, client, tmp_path):
    marked = train_marked_model(seed=0)
    stolen, _ = stolen_and_independent(marked)
    server = LoopbackServer()
    try:
        url = serve_oip(server, lambda x: stolen(torch.from_numpy(x)).detach().numpy())
        alice = make_actor("alice")
        register_model(alice, marked)
        r = alice.api.post("/api/verifications/", {"url": url}, format="json")
        v = wait_for_verification(r.json()["id"], alice.api)
        assert v["status"] == "done", v
        report = client.get(f"/api/reports/{v['report']}").json()
    finally:
        server.close()
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert hallmark(["audit", str(path)]) == 0
    pred = json.loads(base64.b64decode(report["envelope"]["payload"]))["predicate"]
    checks = {c["scheme"]: c for c in pred["checks"]}
    # no weights behind an endpoint: the uchida key is no candidate, counted and not tested
    assert "uchida" not in checks and pred["scan"]["not_applicable"] == {"uchida": 1}
    assert pred["scan"]["profile"] == {"weights": False, "predict": True, "shapes": []}
    assert checks["trigger_set"]["decision"] == "attributed"
    assert checks["trigger_set"]["queries"] == checks["trigger_set"]["n"] > 0
    assert pred["queries"] == checks["trigger_set"]["queries"] == v["queries"]
    assert pred["suspect"]["kind"] == "endpoint" and pred["tests_run"] == 1
    posts = [s for s in server.seen if s.method == "POST"]
    assert sum(json.loads(s.body)["inputs"][0]["shape"][0] for s in posts) == pred["queries"]

