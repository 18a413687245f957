"""Issuing AdvParams decryption licences: signed by the registry and the owner, then logged."""
from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from registry import errors, translog
from registry.identities import owner_identity, registry_identity
from registry.models import Commitment, Licence
from registry.secrets import unseal
from verifier.evidence import logentry
from verifier.evidence.canonical import canonical_json
from verifier.licence import LicenceError, issue_licence
from verifier.models import ModelFormatError, load_suspect
from verifier.schemes import advparams


def issue(commitment: Commitment, licensee: str, encrypted_model: bytes) -> Licence:
    """A licence to decrypt `encrypted_model` (safetensors or ONNX bytes) for `licensee`.

    Refuses (typed API errors) commitments of other schemes, owners who hold their own key
    (the owner must co-sign), files that are not a model, and keys that do not decrypt it.
    """
    if commitment.scheme != advparams.NAME:
        raise errors.NotAdvParams(f"commitment {commitment.digest[:16]}… is a {commitment.scheme} "
                                  "commitment; licences decrypt advparams-encrypted models only")
    owner = owner_identity(commitment.model.owner)
    if owner is None:
        raise errors.BadSignature("the registry does not hold your key, so it cannot co-sign a "
                                  "licence; issue it client-side with verifier.licence.issue_licence")
    weights = _weights(encrypted_model)
    key = advparams.Key.from_bytes(unseal(settings.HALLMARK_MASTER_KEY, bytes(commitment.sealed_key)))
    try:
        doc = issue_licence(licensee, weights, key, registry_identity(), owner,
                            model_name=f"{commitment.model.name} v{commitment.model.version}")
    except LicenceError as e:
        raise errors.BadLicenceRequest(str(e)) from None
    with transaction.atomic():
        lic = Licence.objects.create(commitment=commitment, licensee=licensee,
                                     document=canonical_json(doc).decode())
        entry = translog.append("licence", logentry.log_entry(
            "licence", doc, licence=str(lic.public_id), model=str(commitment.model.public_id),
            licensee=licensee))
        lic.log_index = entry.index
        lic.save(update_fields=["log_index"])
    return lic


def _weights(blob: bytes) -> dict:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        path.write_bytes(blob)
        try:
            loaded = load_suspect(path)
        except ModelFormatError as e:
            raise errors.BadLicenceRequest(f"the uploaded encrypted model cannot be read: {e}") from None
        if not loaded.suspect.has_weights:
            raise errors.BadLicenceRequest("the uploaded file has no weights; upload the encrypted "
                                           "model as safetensors")
        return {k: v.clone() for k, v in loaded.suspect.weights.items()}
