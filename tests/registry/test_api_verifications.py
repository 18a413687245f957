from rest_framework import status

from registry.models import Suspect, Verification


def test_it_refuses_a_file_url_with_a_message_naming_the_fix(alice):
    r = alice.api.post("/api/verifications/", {"url": "file:///etc/passwd"}, format="json")
    assert r.status_code == status.HTTP_400_BAD_REQUEST
    assert r.json()["code"] == "bad_suspect_url"
    assert "http:// or https://" in r.json()["detail"]
    assert Suspect.objects.count() == 0 and Verification.objects.count() == 0


def test_it_requires_a_url(alice):
    r = alice.api.post("/api/verifications/", {}, format="json")
    assert r.status_code == status.HTTP_400_BAD_REQUEST and "url" in r.json()["errors"]


def test_an_outsider_cannot_read_someone_elses_verification(alice, outsider, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        r = alice.api.post("/api/verifications/", {"url": "https://example.org/m.onnx"}, format="json")
    assert r.status_code == status.HTTP_202_ACCEPTED
    assert r.json()["status"] == "queued" and r.json()["progress"] == "0/0"
    assert outsider.api.get(f"/api/verifications/{r.json()['id']}/").status_code == 404
    assert outsider.api.get("/api/verifications/").json()["results"] == []


def test_an_endpoint_url_is_recorded_as_a_black_box_suspect(alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        alice.api.post("/api/verifications/",
                       {"url": "https://infer.example.org/v2/models/digits"}, format="json")
    assert Suspect.objects.get().kind == "endpoint"
    assert len(callbacks) == 1  # the fetch is enqueued only once the rows are committed


def test_a_submission_while_the_broker_is_down_is_accepted_and_kept_for_the_sweeper(
        alice, django_capture_on_commit_callbacks):
    from registry.models import Verification
    from tests.broker import closed_port_url, use_broker

    with use_broker(closed_port_url()), django_capture_on_commit_callbacks(execute=True):
        r = alice.api.post("/api/verifications/", {"url": "https://models.example/m.onnx"},
                           format="json")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    v = Verification.objects.get(public_id=r.json()["id"])
    assert v.driven_at is None  # the sweeper sends its fetch once the broker is back
    assert Verification.objects.count() == 1


def _ec_public_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_publisher_keys_named_in_a_submission_are_kept_for_the_worker(
        alice, django_capture_on_commit_callbacks):
    pem = _ec_public_pem()
    with django_capture_on_commit_callbacks(execute=False):
        r = alice.api.post("/api/verifications/", {"url": "https://example.org/release.zip",
                                                   "publisher_keys": [pem]}, format="json")
    assert r.status_code == status.HTTP_202_ACCEPTED
    assert Verification.objects.get(public_id=r.json()["id"]).publisher_keys == [pem]


def test_a_publisher_key_that_is_not_an_ec_public_key_is_refused_with_the_fix(alice):
    from verifier.evidence.identity import Identity, b64

    for bad in ("not a key", b64(Identity.generate().public_key)):
        r = alice.api.post("/api/verifications/", {"url": "https://example.org/m.zip",
                                                   "publisher_keys": [_ec_public_pem(), bad]},
                           format="json")
        assert r.status_code == status.HTTP_400_BAD_REQUEST
        message = str(r.json()["errors"]["publisher_keys"])
        assert "publisher_keys[1] is not an elliptic-curve public key" in message
        assert "openssl ec" in message
    r = alice.api.post("/api/verifications/", {"url": "https://example.org/m.zip",
                                               "publisher_keys": [_ec_public_pem()] * 5},
                       format="json")
    assert r.status_code == status.HTTP_400_BAD_REQUEST and "publisher_keys" in r.json()["errors"]
    assert Suspect.objects.count() == 0 and Verification.objects.count() == 0
