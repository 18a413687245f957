"""Hugging Face Hub suspects through a real worker, against the loopback Hub + CDN: a sharded
safetensors repo read by ranges, a PEFT adapter repo, an ONNX repo; a redirect to a private
address; a server that ignores Range. Repo names are unique per run (the worker's cache
persists under HALLMARK_DATA_DIR and is keyed by repo@commit)."""
from __future__ import annotations

import base64
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from registry.demo import export_onnx, train_marked_model
from tests.hubserver import HubServer, write_sharded
from tests.integration.test_flow import register_model, wait_for_verification
from tests.registry.conftest import make_actor
from verifier import toy
from verifier.cli import main as hallmark
from verifier.evaluation import seal as seal_eval
from verifier.schemes import seal

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def marked():  # type: ignore[no-untyped-def]
    return train_marked_model(seed=0)


@pytest.fixture
def hub(hub_server: HubServer) -> Iterator[HubServer]:
    """The session's Hub with its switches off and counters at zero for each test."""
    hub_server.reset_counters()
    yield hub_server
    hub_server.ignore_range = hub_server.private_redirect = False
    hub_server.token = None


def _repo(hub: HubServer, kind: str) -> tuple[str, Path]:
    name = f"acme/{kind}-{uuid.uuid4().hex[:8]}"
    return name, hub.repo_dir(name)


def _predicate(client, v: dict) -> dict:  # type: ignore[no-untyped-def,type-arg]
    report = client.get(f"/api/reports/{v['report']}").json()
    return report, json.loads(base64.b64decode(report["envelope"]["payload"]))


def _submit(actor, url: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    r = actor.api.post("/api/verifications/", {"url": url}, format="json")
    assert r.status_code == 202, r.json()
    return wait_for_verification(r.json()["id"], actor.api)


def test_a_sharded_repo_of_a_marked_model_is_attributed_by_range_reads_and_audits_offline(
        celery_worker, hub, marked, client, tmp_path):
    repo, folder = _repo(hub, "sharded")
    write_sharded(folder, {k: v.detach() for k, v in marked.model.state_dict().items()}, 3)
    alice = make_actor("alice")
    register_model(alice, marked)
    v = _submit(alice, f"hf://{repo}")
    assert v["status"] == "done", (v, celery_worker()[-3000:])
    report, statement = _predicate(client, v)
    pred = statement["predicate"]
    checks = {c["scheme"]: c for c in pred["checks"]}
    assert checks["uchida"]["decision"] == "attributed"
    # a scan counts the black-box key as not applicable: safetensors weights are not runnable
    assert "trigger_set" not in checks
    assert pred["scan"]["not_applicable"] == {"trigger_set": 1}, pred["scan"]
    assert pred["scan"]["profile"]["predict"] is False
    h = pred["suspect"]["hub"]
    assert (h["repo"], h["commit"]) == (repo, hub.commit(repo))
    assert statement["subject"][0] == {"name": f"hf://{repo}@{h['commit']}",
                                       "digest": {"sha256": h["subject_sha256"]}}
    assert set(h["evidence"]["headers"]) == {f"model-0000{i}-of-00003.safetensors"
                                             for i in (1, 2, 3)}
    assert "fc1.weight" in h["evidence"]["tensors"]
    assert all(f["claim"] == "claimed by the Hub (LFS ETag), not verified" for f in h["files"])
    assert 0 < h["fraction_read"] < 1
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert hallmark(["audit", str(path), "--suspect", str(folder)]) == 0
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    state = {k: v.detach().clone() for k, v in marked.model.state_dict().items()}
    state["fc1.weight"][0, 0] += 1.0
    write_sharded(changed, state, 3)
    assert hallmark(["audit", str(path), "--suspect", str(changed)]) != 0


def test_an_onnx_repo_is_run_black_box_and_its_files_are_hashed_whole(
        celery_worker, hub, marked, client):
    repo, folder = _repo(hub, "onnx")
    folder.mkdir(parents=True)
    export_onnx(marked.model, folder / "model.onnx")
    (folder / "README.md").write_text("# a model\n")
    alice = make_actor("alice")
    register_model(alice, marked)
    v = _submit(alice, f"https://huggingface.co/{repo}/tree/main")
    assert v["status"] == "done", (v, celery_worker()[-3000:])
    _, statement = _predicate(client, v)
    pred = statement["predicate"]
    assert {c["scheme"]: c["decision"] for c in pred["checks"]}["trigger_set"] == "attributed"
    h = pred["suspect"]["hub"]
    assert list(h["evidence"]["files"]) == ["model.onnx"]
    assert h["files"][0]["claim"] == "verified: downloaded whole and hashed"


def test_a_peft_adapter_repo_is_attributed(celery_worker, hub, client, tmp_path):
    torch.manual_seed(0)
    split = toy.digits(0)
    base = seal_eval.digits_base(split, seed=0, epochs=10)
    key = seal.generate_key(seal.Params(targets=("fc1", "fc2"), r=8, alpha=16.0, bits=128), 77,
                            model=base)
    marked = seal.embed(base, key, list(toy.batches(split.x_train, split.y_train, epochs=10)))
    key = seal.finalize_key(marked, key)
    repo, folder = _repo(hub, "lora")
    shutil.copytree(seal.release(marked, key, tmp_path / "adapter"), folder)

    class Keys:
        keys = {"seal": key.to_bytes()}

    alice = make_actor("alice")
    register_model(alice, Keys)
    v = _submit(alice, f"hf://{repo}@main")
    assert v["status"] == "done", (v, celery_worker()[-3000:])
    assert v["suspect"]["format"].startswith("peft-adapter")
    _, statement = _predicate(client, v)
    (check,) = statement["predicate"]["checks"]
    assert check["scheme"] == "seal" and check["decision"] == "attributed"


def test_a_redirect_to_a_private_address_fails_the_fetch(celery_worker, hub, marked):
    repo, folder = _repo(hub, "private")
    write_sharded(folder, {"w": torch.ones(4, 4)}, 1)
    hub.private_redirect = True
    v = _submit(make_actor("alice"), f"hf://{repo}")
    assert v["status"] == "failed" and v["error_code"] == "fetch_failed"
    assert "10.255.255.1, a private address" in v["error_message"]
    assert not any(r.startswith("cdn") for r in hub.requests)


def test_a_server_that_ignores_range_falls_back_to_whole_files(celery_worker, hub, marked, client):
    repo, folder = _repo(hub, "norange")
    write_sharded(folder, {k: v.detach() for k, v in marked.model.state_dict().items()}, 2)
    hub.ignore_range = True
    alice = make_actor("alice")
    register_model(alice, marked)
    v = _submit(alice, f"hf://{repo}")
    assert v["status"] == "done", (v, celery_worker()[-3000:])
    _, statement = _predicate(client, v)
    checks = {c["scheme"]: c["decision"] for c in statement["predicate"]["checks"]}
    assert checks["uchida"] == "attributed"
    sent = [r for r in hub.requests if r.startswith("cdn GET") and "bytes=" in r]
    assert sent  # ranges were asked for, and the server answered with whole files
    assert hub.bytes_served >= sum(p.stat().st_size for p in folder.glob("*.safetensors"))
