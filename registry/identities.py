"""Ed25519 identities held by the registry: its own, and owners' escrowed keys."""
from __future__ import annotations

from functools import cache

from django.conf import settings

from registry.models import Owner
from registry.secrets import seal, unseal
from verifier.evidence.identity import Identity, keyid_of
from verifier.evidence.note import vkey


@cache
def registry_identity() -> Identity:
    """The registry's signing identity (from HALLMARK_SIGNING_KEY or the data folder)."""
    return Identity.from_seed(settings.HALLMARK_SIGNING_KEY)


def owner_identity(owner: Owner) -> Identity | None:
    """The owner's identity when the registry holds it in escrow; None for bring-your-own-key."""
    if owner.byok:
        return None
    return Identity.from_seed(unseal(settings.HALLMARK_MASTER_KEY, bytes(owner.sealed_signing_key)))


def new_owner_fields(public_key: bytes | None) -> dict[str, object]:
    """Model fields for a new owner: a fresh escrowed key, or the owner's own public key."""
    if public_key is not None:
        return {"public_key": public_key, "keyid": keyid_of(public_key), "sealed_signing_key": None}
    ident = Identity.generate()
    return {"public_key": ident.public_key, "keyid": ident.keyid,
            "sealed_signing_key": seal(settings.HALLMARK_MASTER_KEY, ident.seed)}


def registry_vkey_text() -> str:
    """The registry's signed-note verifier key (C2SP vkey), named after the log origin."""
    return vkey(settings.HALLMARK_LOG_ORIGIN, registry_identity().public_key)
