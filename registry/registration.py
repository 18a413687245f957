"""Registering models and commitments: owner-signed requests, commitment, escrow, log.

Every registration is a DSSE envelope signed by the owner (by the registry on the owner's
behalf when it holds the owner's key in escrow; by the owner client-side otherwise, see
`verifier.evidence.requests`). The log entry names the envelope's SHA-256, and the envelope
is stored, so anyone can check later that the owner asked for it.

A commitment upload refuses, before anything is stored or logged (each a 400 naming the fix):
- a key whose random material is not what its seed derives (`keyfile.KeyMaterialError`);
- a key whose best possible p-value cannot reach HALLMARK_MIN_FORGERY_BITS
  (`verifier.forgery.check_key_strength`): it could never attribute a model;
- a key with owner-chosen inputs that an independent model of its domain's reference panel
  already matches (`verifier.screening.screen`). The screening summary is stored with the
  commitment and logged in its entry; a key of a domain without a panel is "unscreened", one
  whose every random element derives from its seed is "not needed".
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry import errors, panel, translog
from registry.identities import owner_identity
from registry.models import Commitment, Owner, RegisteredModel
from registry.secrets import seal
from verifier import forgery, keyfile, schemes, screening
from verifier.evidence import commitment as commit_lib
from verifier.evidence import logentry, requests
from verifier.evidence.canonical import canonical_json
from verifier.evidence.dsse import verify_envelope
from verifier.evidence.errors import EvidenceError
from verifier.keyfile import KeyFormatError, KeyMaterialError


def _now() -> str:
    return timezone.now().isoformat().replace("+00:00", "Z")


def _signed_request(owner: Owner, request: bytes, signature: bytes | None) -> dict[str, Any]:
    """The owner-signed envelope of `request`; BadSignature unless the owner's key verifies it."""
    ident = owner_identity(owner)
    if signature is None and ident is not None:
        signature = requests.sign_request(ident, request)
    if signature is None:
        raise errors.BadSignature(
            "you hold your own key: sign the request with `hallmark request` and send it as "
            "owner_signature")
    env = requests.request_envelope(request, bytes(owner.public_key), signature)
    try:
        verify_envelope(env, {owner.keyid: bytes(owner.public_key)}, {owner.keyid})
    except EvidenceError:
        raise errors.BadSignature(
            "the owner signature does not verify over this request with the owner's public key; "
            "sign exactly the request for this model and key (`hallmark request`)") from None
    return env


def register_model(owner: Owner, *, name: str, version: str = "1", description: str = "",
                   artifact_sha256: str = "", base_model_sha256: str = "",
                   owner_signature: bytes | None = None) -> RegisteredModel:
    """Create the model row and log its owner-signed registration (one transaction)."""
    request = requests.model_request(name, version, artifact_sha256, base_model_sha256)
    env = _signed_request(owner, request, owner_signature)
    with transaction.atomic():
        model = RegisteredModel.objects.create(
            owner=owner, name=name, version=version, description=description,
            artifact_sha256=artifact_sha256, base_model_sha256=base_model_sha256,
            envelope=canonical_json(env).decode())
        entry = translog.append("model", logentry.log_entry(
            "model", env, model=str(model.public_id), owner_keyid=owner.keyid, name=name,
            version=version, time=_now()))
        model.log_index = entry.index
        model.save(update_fields=["log_index"])
    return model


@dataclass(frozen=True)
class ParsedKey:
    scheme: str
    public_params: dict[str, Any]
    sha256: str
    key: Any  # the scheme's Key


def parse_key(blob: bytes) -> ParsedKey:
    """Check that `blob` is a key of a known scheme, strong enough to ever attribute.

    Raises:
        BadKeyFile: not a key, or its material is not what its seed derives (naming the field).
        WeakKey: its best p-value is above the forgery floor.
    """
    try:
        key = schemes.load_key(blob)
        scheme = keyfile.scheme_of(blob)
    except KeyMaterialError as e:
        raise errors.BadKeyFile(f"the uploaded key was refused: {e}",
                                code="key_material_mismatch") from None
    except (KeyFormatError, schemes.UnknownScheme, ValueError) as e:
        raise errors.BadKeyFile(f"the uploaded key file is not a usable Hallmark key: {e}. "
                                "Create keys with the hallmark library (Key.to_bytes()).") from None
    try:
        forgery.check_key_strength(key.best_log10_p(), scheme, settings.HALLMARK_MIN_FORGERY_BITS)
    except forgery.WeakKeyError as e:
        raise errors.WeakKey(str(e)) from None
    return ParsedKey(scheme, dict(key.public_params()), hashlib.sha256(blob).hexdigest(), key)


def screen_key(parsed: ParsedKey) -> dict[str, Any]:
    """The screening summary to store and log; KeyRefusedByScreening if the panel matches."""
    if not parsed.key.owner_chosen_inputs:
        return {"status": "not needed"}
    domain = panel.domain_of(parsed.public_params)
    result = screening.screen(parsed.key, panel.suspects(domain) if domain else [])
    try:
        result.raise_if_refused(parsed.scheme)
    except screening.ScreeningRefused as e:
        raise errors.KeyRefusedByScreening(str(e)) from None
    return {**result.to_dict(), "domain": domain}


def add_commitment(model: RegisteredModel, blob: bytes,
                   owner_signature: bytes | None = None) -> Commitment:
    """Commit to a key blob (salted, hiding), escrow it sealed, and log the commitment."""
    parsed = parse_key(blob)
    request = requests.commitment_request(str(model.public_id), parsed.scheme, parsed.sha256)
    env = _signed_request(model.owner, request, owner_signature)
    # Per owner: answering "already committed" for another account's key would let anyone
    # test whether a given key blob sits in escrow. Two owners committing one blob are
    # resolved by the priority rule (earliest log index) and flagged as a dispute.
    if Commitment.objects.filter(key_sha256=parsed.sha256, model__owner=model.owner).exists():
        raise errors.DuplicateCommitment()
    screened = screen_key(parsed)
    salt = commit_lib.new_salt()
    digest = commit_lib.commit(parsed.scheme, salt, blob)
    with transaction.atomic():
        c = Commitment.objects.create(
            model=model, scheme=parsed.scheme, public_params=parsed.public_params, digest=digest,
            salt=salt, key_sha256=parsed.sha256, envelope=canonical_json(env).decode(),
            sealed_key=seal(settings.HALLMARK_MASTER_KEY, blob), screening=screened,
            **Commitment.index_fields(parsed.scheme, parsed.public_params))  # the scan index
        entry = translog.append("commitment", logentry.log_entry(
            "commitment", env, commitment=digest, scheme=parsed.scheme,
            model=str(model.public_id), owner_keyid=model.owner.keyid,
            public_params=parsed.public_params, screening=screened, time=_now()))
        c.log_index = entry.index
        c.save(update_fields=["log_index"])
    return c
