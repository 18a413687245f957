import io

from django.test import Client

from registry.models import Commitment, RegisteredModel
from tests.keys import uchida_key_blob


def _login(actor) -> Client:  # type: ignore[no-untyped-def]
    c = Client()
    c.force_login(actor.user)
    return c


def test_signing_up_creates_an_owner_identity(db):
    c = Client()
    r = c.post("/signup/", {"username": "dora", "password1": "a long passphrase 42",
                            "password2": "a long passphrase 42"})
    assert r.status_code == 302
    page = c.get("/dashboard/").content.decode()
    assert "dora" in page and "Owner key ID" in page


def test_pages_need_a_login(db):
    assert Client().get("/dashboard/").status_code == 302
    assert Client().get("/models/new/").url.startswith("/login/")


def test_an_owner_registers_a_model_and_commits_a_key_through_the_forms(alice):
    c = _login(alice)
    r = c.post("/models/new/", {"name": "digits", "version": "1"})
    model = RegisteredModel.objects.get()
    assert r.url == f"/models/{model.public_id}/"
    key = io.BytesIO(uchida_key_blob())
    key.name = "key.safetensors"
    c.post(r.url, {"key": key})
    page = c.get(r.url).content.decode()
    assert Commitment.objects.get().digest in page


def test_a_bad_key_file_is_shown_as_a_form_error(alice):
    c = _login(alice)
    url = c.post("/models/new/", {"name": "digits", "version": "1"}).url
    f = io.BytesIO(b"junk")
    f.name = "k"
    page = c.post(url, {"key": f}).content.decode()
    assert "not a usable Hallmark key" in page and not Commitment.objects.exists()


def test_an_outsider_never_sees_another_owners_model_page(alice, outsider):
    url = _login(alice).post("/models/new/", {"name": "digits", "version": "1"}).url
    assert _login(outsider).get(url).status_code == 404
    assert "digits" not in _login(outsider).get("/dashboard/").content.decode()


def test_a_file_url_is_refused_in_the_suspect_form(alice, django_capture_on_commit_callbacks):
    page = _login(alice).post("/verifications/new/", {"url": "file:///etc/passwd"}).content.decode()
    assert "http:// or https://" in page
