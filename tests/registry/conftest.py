"""Fixtures for registry tests: an owner, a BYOK owner and an outsider, each with an API client."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from registry.identities import new_owner_fields
from registry.models import Owner
from verifier.evidence.identity import Identity


@dataclass
class Actor:
    user: User
    owner: Owner
    api: APIClient
    identity: Identity | None = None  # the client-side key of a BYOK owner


def make_actor(username: str, identity: Identity | None = None) -> Actor:
    user = User.objects.create_user(username, password="correct horse battery")
    owner = Owner.objects.create(user=user, **new_owner_fields(
        identity.public_key if identity else None))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return Actor(user, owner, api, identity)


@pytest.fixture
def alice(db: None) -> Actor:
    return make_actor("alice")


@pytest.fixture
def outsider(db: None) -> Actor:
    return make_actor("mallory")


@pytest.fixture
def byok(db: None) -> Actor:
    return make_actor("carol", Identity.from_seed(bytes(range(32))))
