from rest_framework import status

from verifier.evidence import dsse
from verifier.evidence.identity import unb64


def test_an_owner_registers_a_model_and_gets_a_signed_receipt(alice):
    r = alice.api.post("/api/models/", {"name": "digits", "version": "1"}, format="json")
    assert r.status_code == status.HTTP_201_CREATED
    receipt = r.json()["receipt"]
    reg = receipt["public_keys"]["registry"]
    payload = dsse.verify_envelope(receipt["envelope"], {reg["keyid"]: unb64(reg["ed25519"])},
                                   {reg["keyid"]})
    assert b'"type":"model"' in payload and r.json()["id"].encode() in payload
    assert receipt["log"]["index"] == r.json()["log_index"]


def test_it_refuses_the_same_name_and_version_twice(alice):
    alice.api.post("/api/models/", {"name": "digits"}, format="json")
    r = alice.api.post("/api/models/", {"name": "digits"}, format="json")
    assert r.status_code == status.HTTP_400_BAD_REQUEST
    assert "bump `version`" in str(r.json())


def test_an_outsider_never_sees_another_owners_models(alice, outsider):
    model_id = alice.api.post("/api/models/", {"name": "digits"}, format="json").json()["id"]
    assert outsider.api.get("/api/models/").json()["results"] == []
    assert outsider.api.get(f"/api/models/{model_id}/").status_code == status.HTTP_404_NOT_FOUND
    assert outsider.api.get(f"/api/models/{model_id}/commitments/").status_code == 404


def test_anonymous_requests_are_refused(client, db):
    assert client.get("/api/models/").status_code == status.HTTP_401_UNAUTHORIZED
