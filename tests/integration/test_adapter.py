"""A real PEFT LoRA adapter (released by `seal`) through fetch → check → report on a real worker."""
from __future__ import annotations

import base64
import json
import shutil

import pytest
import torch

from tests.integration.test_flow import register_model, wait_for_verification
from tests.registry.conftest import make_actor
from verifier import toy
from verifier.evaluation import seal as seal_eval
from verifier.schemes import seal

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_released_seal_adapter_is_attributed_from_a_zip_url(celery_worker, file_server, client,
                                                              tmp_path):
    torch.manual_seed(0)
    split = toy.digits(0)
    base = seal_eval.digits_base(split, seed=0, epochs=10)
    params = seal.Params(targets=("fc1", "fc2"), r=8, alpha=16.0, bits=128)
    key = seal.generate_key(params, 77, model=base)
    marked = seal.embed(base, key, list(toy.batches(split.x_train, split.y_train, epochs=10)))
    key = seal.finalize_key(marked, key)
    folder = seal.release(marked, key, tmp_path / "adapter")
    url_base, served = file_server
    shutil.make_archive(str(served / "adapter"), "zip", folder)

    class Marked:  # what register_model needs: the key blobs by scheme
        keys = {"seal": key.to_bytes()}

    alice = make_actor("alice")
    register_model(alice, Marked)
    r = alice.api.post("/api/verifications/", {"url": f"{url_base}/adapter.zip"}, format="json")
    v = wait_for_verification(r.json()["id"], alice.api)
    assert v["status"] == "done", v
    assert v["suspect"]["format"] == "peft-adapter"
    report = client.get(f"/api/reports/{v['report']}").json()
    (check,) = json.loads(base64.b64decode(report["envelope"]["payload"]))["predicate"]["checks"]
    assert check["scheme"] == "seal" and check["decision"] == "attributed"
    assert check["null"] == "exact" and check["log10_p"] < -9
