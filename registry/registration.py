"""Registering models and commitments: validate, commit, escrow, log, and sign a receipt."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry import errors, translog
from registry.identities import owner_identity
from registry.models import Commitment, Owner, RegisteredModel
from registry.secrets import seal
from verifier import keyfile, schemes
from verifier.evidence import commitment as commit_lib
from verifier.evidence.canonical import canonical_json
from verifier.evidence.identity import b64, verify_signature
from verifier.keyfile import KeyFormatError


def _now() -> str:
    return timezone.now().isoformat().replace("+00:00", "Z")


def commitment_request(model: RegisteredModel, scheme: str, key_sha256: str) -> bytes:
    """The bytes an owner signs to ask for a commitment (what `hallmark sign` signs for BYOK)."""
    return canonical_json({"type": "hallmark/commitment-request/v1", "model": str(model.public_id),
                           "scheme": scheme, "key_sha256": key_sha256})


def register_model(owner: Owner, *, name: str, version: str = "1", description: str = "",
                   artifact_sha256: str = "", base_model_sha256: str = "") -> RegisteredModel:
    """Create the model row and log its registration (in one transaction)."""
    with transaction.atomic():
        model = RegisteredModel.objects.create(
            owner=owner, name=name, version=version, description=description,
            artifact_sha256=artifact_sha256, base_model_sha256=base_model_sha256)
        entry = translog.append("model", {
            "type": "model", "model": str(model.public_id), "owner": owner.keyid, "name": name,
            "version": version, "artifact_sha256": artifact_sha256,
            "base_model_sha256": base_model_sha256, "time": _now()})
        model.log_index = entry.index
        model.save(update_fields=["log_index"])
    return model


@dataclass(frozen=True)
class ParsedKey:
    scheme: str
    public_params: dict[str, Any]
    sha256: str


def parse_key(blob: bytes) -> ParsedKey:
    """Check that `blob` is a key of a known scheme; raise BadKeyFile naming the problem."""
    try:
        key = schemes.load_key(blob)
    except (KeyFormatError, schemes.UnknownScheme, ValueError) as e:
        raise errors.BadKeyFile(f"the uploaded key file is not a usable Hallmark key: {e}. "
                                "Create keys with the `hallmark` library (Key.to_bytes()).") from None
    scheme = keyfile.scheme_of(blob)
    return ParsedKey(scheme, dict(key.public_params()), hashlib.sha256(blob).hexdigest())


def add_commitment(model: RegisteredModel, blob: bytes,
                   owner_signature: bytes | None = None) -> Commitment:
    """Commit to a key blob, escrow it sealed, and log the commitment.

    The owner signs the commitment request (see `commitment_request`): the registry signs on
    the owner's behalf with the escrowed key, or checks the signature a BYOK owner supplies.
    """
    parsed = parse_key(blob)
    request = commitment_request(model, parsed.scheme, parsed.sha256)
    ident = owner_identity(model.owner)
    if owner_signature is None and ident is not None:
        owner_signature = ident.sign(request)
    if owner_signature is None or not verify_signature(bytes(model.owner.public_key), request,
                                                       owner_signature):
        raise errors.BadSignature(
            "the owner signature over the commitment request does not verify; sign the "
            "canonical request bytes with your owner key (`hallmark sign`)")
    if Commitment.objects.filter(key_sha256=parsed.sha256).exists():
        raise errors.DuplicateCommitment()
    salt = commit_lib.new_salt()
    digest = commit_lib.commit(parsed.scheme, salt, blob)
    with transaction.atomic():
        c = Commitment.objects.create(
            model=model, scheme=parsed.scheme, public_params=parsed.public_params, digest=digest,
            salt=salt, key_sha256=parsed.sha256, owner_signature=owner_signature,
            sealed_key=seal(settings.HALLMARK_MASTER_KEY, blob))
        entry = translog.append("commitment", {
            "type": "commitment", "commitment": digest, "scheme": parsed.scheme,
            "model": str(model.public_id), "owner": model.owner.keyid,
            "public_params": parsed.public_params, "request_sha256": hashlib.sha256(request).hexdigest(),
            "owner_signature": b64(owner_signature), "time": _now()})
        c.log_index = entry.index
        c.save(update_fields=["log_index"])
    return c
