import base64
import hashlib
import io

from rest_framework import status

from registry.models import Commitment
from tests.keys import uchida_key_blob
from verifier.evidence import requests
from verifier.evidence.commitment import commit
from verifier.evidence.identity import b64


def _model(actor):
    return actor.api.post("/api/models/", {"name": "digits"}, format="json").json()["id"]


def _upload(actor, model_id, blob, **extra):
    f = io.BytesIO(blob)
    f.name = "key.safetensors"
    return actor.api.post(f"/api/models/{model_id}/commitments/", {"key": f, **extra},
                          format="multipart")


def test_a_commitment_is_salted_escrowed_and_logged(alice):
    blob = uchida_key_blob()
    r = _upload(alice, _model(alice), blob)
    assert r.status_code == status.HTTP_201_CREATED, r.json()
    body = r.json()
    c = Commitment.objects.get(digest=body["digest"])
    assert commit("uchida", bytes(c.salt), blob) == body["digest"]
    assert blob not in bytes(c.sealed_key)  # encrypted at rest
    assert "salt" not in body and "sealed_key" not in body
    assert body["public_params"]["bits"] == 128
    assert body["receipt"]["log"]["index"] == body["log_index"]


def test_the_owner_can_open_a_commitment_and_an_outsider_cannot(alice, outsider):
    blob = uchida_key_blob()
    body = _upload(alice, _model(alice), blob).json()
    opening = alice.api.post(f"/api/commitments/{body['id']}/open/").json()
    assert base64.b64decode(opening["key"]) == blob
    assert outsider.api.post(f"/api/commitments/{body['id']}/open/").status_code == 404
    assert outsider.api.get("/api/commitments/").json()["results"] == []


def test_it_rejects_a_file_that_is_not_a_key(alice):
    r = _upload(alice, _model(alice), b"definitely not safetensors")
    assert r.status_code == status.HTTP_400_BAD_REQUEST
    assert r.json()["code"] == "bad_key_file"
    assert Commitment.objects.count() == 0


def test_it_rejects_the_same_key_committed_twice(alice):
    model_id, blob = _model(alice), uchida_key_blob()
    _upload(alice, model_id, blob)
    r = _upload(alice, model_id, blob)
    assert r.status_code == status.HTTP_409_CONFLICT
    assert Commitment.objects.count() == 1


def _byok_model(actor):
    sig = b64(requests.sign_request(actor.identity, requests.model_request("digits", "1")))
    r = actor.api.post("/api/models/", {"name": "digits", "owner_signature": sig}, format="json")
    assert r.status_code == status.HTTP_201_CREATED, r.json()
    return r.json()["id"]


def test_a_byok_owner_must_sign_the_model_registration(byok):
    r = byok.api.post("/api/models/", {"name": "digits"}, format="json")
    assert r.status_code == status.HTTP_400_BAD_REQUEST and r.json()["code"] == "bad_signature"
    assert "hallmark request" in r.json()["detail"]
    _byok_model(byok)


def test_a_byok_owner_must_sign_the_commitment_request(byok):
    model_id, blob = _byok_model(byok), uchida_key_blob()
    r = _upload(byok, model_id, blob)
    assert r.status_code == status.HTTP_400_BAD_REQUEST and r.json()["code"] == "bad_signature"
    wrong = b64(requests.sign_request(byok.identity, b"something else"))
    assert _upload(byok, model_id, blob, owner_signature=wrong).status_code == 400
    request = requests.commitment_request(model_id, "uchida", hashlib.sha256(blob).hexdigest())
    sig = b64(requests.sign_request(byok.identity, request))
    r = _upload(byok, model_id, blob, owner_signature=sig)
    assert r.status_code == status.HTTP_201_CREATED
    assert Commitment.objects.get().model.owner.byok
