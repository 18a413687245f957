import io
import json

import pytest
import torch
from safetensors.torch import load_file, save, save_file

from registry.models import Licence, LogEntry
from tests.keys import uchida_key_blob
from verifier import toy
from verifier.cli import main as hallmark
from verifier.evidence.identity import unb64
from verifier.licence import verify_licence
from verifier.schemes import advparams


@pytest.fixture(scope="module")
def encrypted():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    split = toy.digits(seed=0)
    model = toy.train_digits(toy.MLP(), split, epochs=15)
    enc, key = advparams.encrypt(model, advparams.Params(), 0, (split.x_held, split.y_held))
    weights = {k: v.detach().contiguous() for k, v in enc.state_dict().items()}
    return model, weights, key


def _file(blob: bytes, name: str) -> io.BytesIO:
    f = io.BytesIO(blob)
    f.name = name
    return f


def _commit(actor, key) -> str:  # type: ignore[no-untyped-def]
    model_id = actor.api.post("/api/models/", {"name": "secret"}, format="json").json()["id"]
    r = actor.api.post(f"/api/models/{model_id}/commitments/",
                       {"key": _file(key.to_bytes(), "k")}, format="multipart")
    assert r.status_code == 201, r.json()
    return r.json()["id"]


def test_an_owner_issues_a_licence_that_decrypts_only_the_named_model(alice, encrypted, tmp_path):
    clear, weights, key = encrypted
    cid = _commit(alice, key)
    r = alice.api.post(f"/api/commitments/{cid}/licences/",
                       {"licensee": "Acme Ltd", "model": _file(save(weights), "enc.safetensors")},
                       format="multipart")
    assert r.status_code == 201, r.json()
    doc = r.json()["licence"]
    reg = unb64(r.json()["receipt"]["public_keys"]["registry"]["ed25519"])
    lic = verify_licence(doc, reg, bytes(alice.owner.public_key))
    assert lic.licensee == "Acme Ltd"
    assert LogEntry.objects.get(index=Licence.objects.get().log_index).kind == "licence"
    (tmp_path / "licence.json").write_text(json.dumps(doc))
    save_file(weights, tmp_path / "enc.safetensors")
    assert hallmark(["decrypt", str(tmp_path / "enc.safetensors"), "--licence",
                     str(tmp_path / "licence.json"), "--out", str(tmp_path / "plain.safetensors")]) == 0
    plain = load_file(tmp_path / "plain.safetensors")
    assert all(torch.equal(plain[k], v) for k, v in clear.state_dict().items())
    other = {k: v + 1 for k, v in weights.items()}
    save_file(other, tmp_path / "other.safetensors")
    assert hallmark(["decrypt", str(tmp_path / "other.safetensors"), "--licence",
                     str(tmp_path / "licence.json"), "--out", str(tmp_path / "x.safetensors")]) != 0


def test_it_refuses_a_licence_for_a_model_the_key_does_not_decrypt(alice, encrypted):
    _, weights, key = encrypted
    cid = _commit(alice, key)
    wrong = save({k: torch.zeros_like(v) for k, v in weights.items()})
    r = alice.api.post(f"/api/commitments/{cid}/licences/",
                       {"licensee": "Acme", "model": _file(wrong, "m.safetensors")}, format="multipart")
    assert r.status_code == 400 and r.json()["code"] == "bad_licence_request"
    assert not Licence.objects.exists()


def test_an_outsider_cannot_issue_licences_for_someone_elses_model(alice, outsider, encrypted):
    _, weights, key = encrypted
    cid = _commit(alice, key)
    r = outsider.api.post(f"/api/commitments/{cid}/licences/",
                          {"licensee": "me", "model": _file(save(weights), "m")}, format="multipart")
    assert r.status_code == 404 and not Licence.objects.exists()


def test_licences_are_only_for_advparams_commitments(alice):
    model_id = alice.api.post("/api/models/", {"name": "m"}, format="json").json()["id"]
    cid = alice.api.post(f"/api/models/{model_id}/commitments/",
                         {"key": _file(uchida_key_blob(), "k")}, format="multipart").json()["id"]
    r = alice.api.post(f"/api/commitments/{cid}/licences/",
                       {"licensee": "x", "model": _file(b"x", "m")}, format="multipart")
    assert r.status_code == 400 and r.json()["code"] == "not_advparams"
