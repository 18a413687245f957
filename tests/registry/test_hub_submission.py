"""Hub suspects are accepted on the API (and, through the same `validate_url`, the web form and
the CLI) as hf:// references and huggingface.co repo URLs; malformed ones are refused."""
from __future__ import annotations

import pytest

from registry.hubrefs import HubRef, HubRefError, parse_hub_ref
from registry.models import Suspect
from tests.registry.conftest import make_actor

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("url", "ref"), [
    ("hf://acme/resnet", HubRef("acme/resnet", "main", "")),
    ("hf://acme/resnet@v1.2", HubRef("acme/resnet", "v1.2", "")),
    ("hf://acme/resnet@" + "a" * 40, HubRef("acme/resnet", "a" * 40, "")),
    ("https://huggingface.co/acme/resnet", HubRef("acme/resnet", "main", "")),
    ("https://huggingface.co/acme/resnet/", HubRef("acme/resnet", "main", "")),
    ("https://huggingface.co/acme/resnet/tree/dev", HubRef("acme/resnet", "dev", "")),
    ("https://huggingface.co/acme/resnet/blob/main/onnx/model.onnx",
     HubRef("acme/resnet", "main", "onnx/model.onnx")),
])
def test_hub_references_parse_to_repo_revision_and_file(url, ref):
    assert parse_hub_ref(url) == ref


@pytest.mark.parametrize(("url", "message"), [
    ("hf://acme", "expected hf://org/name"),
    ("hf://acme/a/b", "expected hf://org/name"),
    ("hf://-acme/m", "organization '-acme' is not a Hub name"),
    ("hf://acme/m@", "revision '' is not a branch"),
    ("hf://acme/m@../x", "revision '..' is not a branch"),
    ("https://huggingface.co/datasets/acme/d", "does not name a model repo"),
    ("https://huggingface.co/acme/m/commits/main", "only /tree/<revision>"),
    ("https://huggingface.co/acme/m/blob/main/../x", "not a plain relative path"),
    ("https://huggingface.co/acme/m?x=1", "query or fragment"),
])
def test_malformed_hub_references_are_refused_naming_the_fix(url, message):
    with pytest.raises(HubRefError, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_hub_ref(url)


def test_other_urls_are_not_hub_references():
    assert parse_hub_ref("https://example.com/acme/m") is None


def test_the_api_accepts_a_hub_repo_as_a_hub_suspect(django_capture_on_commit_callbacks):
    alice = make_actor("alice")
    with django_capture_on_commit_callbacks(execute=False):
        r = alice.api.post("/api/verifications/", {"url": "hf://acme/resnet@v1"}, format="json")
    assert r.status_code == 202, r.json()
    s = Suspect.objects.get()
    assert (s.kind, s.url, s.hub_commit) == ("hub", "hf://acme/resnet@v1", "")


def test_the_api_refuses_a_malformed_hub_url_and_stores_nothing():
    alice = make_actor("alice")
    r = alice.api.post("/api/verifications/", {"url": "https://huggingface.co/spaces/a/b"},
                       format="json")
    assert r.status_code == 400
    assert r.json()["type"].endswith("/bad_suspect_url")
    assert "does not name a model repo" in r.json()["detail"]
    assert not Suspect.objects.exists()


def test_the_web_form_accepts_a_hub_repo_and_refuses_a_space(alice, django_capture_on_commit_callbacks):
    from django.test import Client

    c = Client()
    c.force_login(alice.user)
    page = c.post("/verifications/new/", {"url": "https://huggingface.co/spaces/a/b"})
    assert "does not name a model repo" in page.content.decode()
    assert not Suspect.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        r = c.post("/verifications/new/", {"url": "https://huggingface.co/acme/m/tree/v2"})
    assert r.status_code == 302
    assert Suspect.objects.get().kind == "hub"
