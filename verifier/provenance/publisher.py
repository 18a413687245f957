"""A publisher's OpenSSF model-signing signature shipped with a suspect, verified by key.

Conventions (docs/evidence.md, "Provenance"): the suspect is a .zip/.tar of a folder (or a
folder) holding the model files, `model.sig` (a key-based model-signing bundle) and, optionally,
`model.pub.pem` (the publisher's elliptic-curve public key, PEM). The bundle is either
- a folder signature: made on the folder with `model.sig` and `model.pub.pem` in its ignored
  paths (`model_signing.hashing.Config().set_ignored_paths(paths=["model.sig",
  "model.pub.pem"])`); every other file must match, and no file may be added; or
- a single-file signature (`hallmark watermark --sign`, `model_signing` on one file; its
  manifest names no file): the folder must then hold exactly one file besides `model.sig` and
  `model.pub.pem`, and that file is verified.

The verifying key is chosen by the bundle's key hint (SHA-256 of the key's PEM
SubjectPublicKeyInfo) among the candidate keys the caller gives (e.g. the shipped
`model.pub.pem`); with no candidate matching, the signature is "unverified", never "valid".
Sigstore (certificate) bundles are "unverified" too: the registry does not contact Sigstore.

Statuses: "valid", "invalid" (present, fails: a changed, added or missing file, a bad
signature, a malformed bundle), "unverified" (present, no key to check it with), "absent".
"""
from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SIGNATURE = "model.sig"  # the bundle's file name in the suspect's model folder
PUBLIC_KEY = "model.pub.pem"  # the publisher's EC public key (PEM) beside it, optional
MAX_BUNDLE_BYTES = 1 << 20  # a key-based bundle is a few KB; anything over 1 MiB is refused
MAX_KEY_BYTES = 16 << 10


@dataclass(frozen=True)
class CandidateKey:
    """A public key the signature may be checked with, and where it came from."""

    pem: bytes  # an EC public key, PEM SubjectPublicKeyInfo
    source: str  # e.g. "shipped with the suspect (model.pub.pem)"


@dataclass(frozen=True)
class PublisherCheck:
    """The outcome of `check_publisher` (module docstring: statuses)."""

    status: str  # "valid" | "invalid" | "unverified" | "absent"
    detail: str  # one sentence: what was checked, or why it failed
    signature: str | None = None  # the bundle's file name, when present
    key_sha256: str | None = None  # the signing key's SHA-256 (the bundle's hint), when known
    key_source: str | None = None  # where the matching key came from
    signed_files: list[str] = field(default_factory=list)  # the files the bundle names

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for reports."""
        return asdict(self)


def key_sha256(pem: bytes) -> str | None:
    """model-signing's key hint for an EC public key PEM (None if it is not one).

    Example:
        >>> key_sha256(b"not a key") is None
        True
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return None
    spki = key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def shipped_key(folder: Path) -> CandidateKey | None:
    """The publisher key shipped as `model.pub.pem` in the model folder, if any."""
    path = folder / PUBLIC_KEY
    if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_KEY_BYTES:
        return None
    return CandidateKey(path.read_bytes(), f"shipped with the suspect ({PUBLIC_KEY})")


def _read_bundle(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The bundle's key hint and (unverified) in-toto payload; ValueError if malformed."""
    if path.stat().st_size > MAX_BUNDLE_BYTES:
        raise ValueError(f"it is over {MAX_BUNDLE_BYTES} bytes")
    bundle = json.loads(path.read_bytes())
    if not isinstance(bundle, dict) or not isinstance(bundle.get("dsseEnvelope"), dict):
        raise ValueError("it holds no DSSE envelope")
    material = bundle.get("verificationMaterial") or {}
    hint = (material.get("publicKey") or {}).get("hint") if isinstance(material, dict) else None
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"].get("payload", ""),
                                            validate=True))
    if not isinstance(statement, dict) or not isinstance(statement.get("predicate"), dict):
        raise ValueError("its payload is not an in-toto statement")
    return (hint if isinstance(hint, str) else None), statement["predicate"]


def _signed_names(predicate: dict[str, Any]) -> list[str]:
    """The resource names of the (not yet verified) manifest; ["."] for a single file."""
    return [str(r.get("name", "")) for r in predicate.get("resources") or []
            if isinstance(r, dict)]


def _verify(target: Path, signature: Path, pem: bytes) -> str | None:
    """None if the library verifies `target` against the bundle with this key, else why not."""
    import model_signing

    with tempfile.NamedTemporaryFile(suffix=".pem") as key:
        key.write(pem)
        key.flush()
        try:
            model_signing.verifying.Config().use_elliptic_key_verifier(
                public_key=key.name).verify(target, signature)
        except Exception as e:  # the library raises ValueError and its own errors: all "fails"
            return (str(e).splitlines() or [type(e).__name__])[0][:300]
    return None


def check_publisher(folder: Path, keys: Sequence[CandidateKey] = ()) -> PublisherCheck:
    """Verify the model-signing bundle `model.sig` in a suspect's model folder.

    Args:
        folder: the model folder (e.g. from `verifier.models.model_files`); a single file
            carries no bundle, so it gives "absent".
        keys: candidate verifying keys; the one matching the bundle's key hint is used.

    Returns:
        PublisherCheck; never raises for anything inside the folder.

    Example:
        >>> check_publisher(Path("/nonexistent")).status
        'absent'
    """
    signature = folder / SIGNATURE
    if not folder.is_dir() or not signature.is_file() or signature.is_symlink():
        return PublisherCheck("absent", f"no {SIGNATURE} beside the model files (send a .zip or "
                                        f".tar of a folder holding the model, {SIGNATURE} and "
                                        f"{PUBLIC_KEY})")
    try:
        hint, predicate = _read_bundle(signature)
    except (ValueError, TypeError, OSError, AttributeError) as e:
        return PublisherCheck("invalid", f"{SIGNATURE} is not a model-signing bundle: {e}",
                              SIGNATURE)
    names = _signed_names(predicate)
    if hint is None:
        return PublisherCheck("unverified", f"{SIGNATURE} is not key-based (a Sigstore "
                                            "certificate bundle): the registry does not contact "
                                            "Sigstore; check it with `hallmark check-signature "
                                            "--identity --issuer`", SIGNATURE, signed_files=names)
    match = next((k for k in keys if key_sha256(k.pem) == hint), None)
    if match is None:
        return PublisherCheck("unverified", f"signed by the key with SHA-256 {hint}, which is "
                                            f"not among the keys given (ship it as {PUBLIC_KEY})",
                              SIGNATURE, hint, signed_files=names)
    target = folder
    if names == ["."]:  # a single-file signature: it names no file, so the folder holds one
        others = sorted(p.name for p in folder.iterdir() if p.name not in (SIGNATURE, PUBLIC_KEY))
        if len(others) != 1 or not (folder / others[0]).is_file():
            return PublisherCheck("invalid", f"{SIGNATURE} signs a single file, but the model "
                                             f"folder holds {len(others)} other entries "
                                             f"({', '.join(others)[:200]}); ship that one file "
                                             f"with {SIGNATURE} and {PUBLIC_KEY} only", SIGNATURE,
                                  hint, match.source)
        target, names = folder / others[0], others
    failure = _verify(target, signature, match.pem)
    if failure is not None:
        return PublisherCheck("invalid", f"does not verify: {failure}", SIGNATURE, hint,
                              match.source, names)
    covered = ("every file of the model folder" if target == folder
               else f"the model file {names[0]}")
    return PublisherCheck("valid", f"the bundle verifies with the key with SHA-256 {hint}: it "
                                   f"covers {covered}", SIGNATURE, hint, match.source, names)
