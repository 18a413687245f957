"""Template context every page gets: the registry's published key, for the footer."""
from __future__ import annotations

from django.http import HttpRequest

from registry.identities import registry_vkey_text


def registry_key(request: HttpRequest) -> dict[str, str]:
    return {"registry_vkey": registry_vkey_text()}
