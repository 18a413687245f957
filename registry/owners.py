"""Logging an owner at sign-up: the registry-signed owner statement and its "owner" entry."""
from __future__ import annotations

from django.db import transaction

from registry import translog
from registry.identities import owner_identity, registry_identity
from registry.models import Owner
from registry.reporting import rfc3339
from verifier.evidence.canonical import canonical_json
from verifier.evidence.owners import owner_entry, owner_statement


def log_owner(owner: Owner) -> Owner:
    """Sign the owner statement (with the owner's key too when the registry holds it: proof of
    possession), append its "owner" entry and store both on the row. Call inside the sign-up
    transaction so that an owner never exists unlogged."""
    public_key = bytes(owner.public_key)
    envelope = owner_statement(registry_identity(), public_key, rfc3339(owner.created_at) or "",
                               owner_identity(owner))
    with transaction.atomic():
        entry = translog.append("owner", owner_entry(envelope, public_key))
        owner.statement = canonical_json(envelope).decode()
        owner.log_index = entry.index
        owner.save(update_fields=["statement", "log_index"])
    return owner
