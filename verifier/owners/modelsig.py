"""OpenSSF model-signing interop: sign a marked model, verify a publisher's signature.

Uses the `model-signing` library (optional dependency: `pip install 'hallmark[signing]'`; it
imports pyopenssl without declaring it, so the extra lists both). A model-signing signature
is a Sigstore bundle whose DSSE envelope carries an in-toto statement over the digests of
the model's files. It says who published exactly these bytes; it is removable and says
nothing about where the weights came from, so it is shown beside the watermark verdict,
never folded into it.

- key-based: `sign_model(model, private_key_pem, out)` / `verify_model(..., public_key=PEM)`
  with an elliptic-curve key (P-256/384/521, e.g. `openssl ecparam -name prime256v1 -genkey
  -noout -out key.pem`; the owner's Ed25519 registry key is not accepted by model-signing);
- Sigstore (keyless): `verify_model(..., identity=EMAIL_OR_URI, issuer=OIDC_ISSUER)`; it needs
  Sigstore's public trust root, i.e. network access.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from verifier.owners.errors import OwnerToolError

LABEL = "publisher signature (OpenSSF model-signing): who published these bytes; removable"


def model_signing_lib() -> ModuleType:
    try:
        import model_signing
    except ImportError as e:
        raise OwnerToolError(f"model-signing is not installed ({e}); install it with "
                             "`pip install 'hallmark[signing]'`") from None
    return model_signing


SHIPPED = ("model.sig", "model.pub.pem")  # verifier.provenance's names inside a model folder


def sign_model(model: Path, private_key: Path, out: Path) -> None:
    """Write a key-based model-signing bundle for a model file or folder to `out`.

    A folder is signed with `model.sig` and `model.pub.pem` ignored, so the bundle and the
    public key can be shipped inside it under those names and the registry verifies it
    (docs/evidence.md, "Declared provenance").

    Raises:
        OwnerToolError: the library is missing, the key is unusable, or `out` exists.
    """
    lib = model_signing_lib()
    if out.exists():
        raise OwnerToolError(f"{out} already exists; choose another signature path")
    try:
        config = lib.signing.Config().use_elliptic_key_signer(private_key=str(private_key))
        if model.is_dir():
            config = config.set_hashing_config(
                lib.hashing.Config().set_ignored_paths(paths=list(SHIPPED)))
        config.sign(str(model), str(out))
    except (ValueError, TypeError, OSError) as e:
        out.unlink(missing_ok=True)
        raise OwnerToolError(f"model-signing could not sign {model} with {private_key}: {e} "
                             "(it takes an elliptic-curve PEM key, e.g. from `openssl ecparam "
                             "-name prime256v1 -genkey -noout -out key.pem`)") from None


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of verifying a model-signing bundle."""

    ok: bool  # the bundle verifies for these files with this key or identity
    method: str  # "key" or "sigstore"
    detail: str  # what was checked, or why it failed
    label: str = LABEL

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "method": self.method, "detail": self.detail, "label": self.label}


def verify_model(model: Path, signature: Path, *, public_key: Path | None = None,
                 identity: str | None = None, issuer: str | None = None) -> SignatureCheck:
    """Verify a model-signing bundle against the model's files.

    Args:
        model: the model file or folder as received.
        signature: the bundle (e.g. model.sig).
        public_key: an EC public key PEM (key-based signatures), or
        identity, issuer: the signer's Sigstore identity and OIDC issuer (keyless).

    Returns:
        SignatureCheck; `ok` False with the library's reason on any mismatch.

    Raises:
        OwnerToolError: the library is missing, or neither a key nor an identity was given.
    """
    lib = model_signing_lib()
    config = lib.verifying.Config()
    if public_key is not None:
        method, what = "key", f"public key {public_key}"
        config = config.use_elliptic_key_verifier(public_key=str(public_key))
    elif identity and issuer:
        method, what = "sigstore", f"Sigstore identity {identity} ({issuer})"
        config = config.use_sigstore_verifier(identity=identity, oidc_issuer=issuer)
    else:
        raise OwnerToolError("give the publisher's --public-key PEM, or --identity and --issuer "
                             "for a Sigstore (keyless) signature")
    try:
        config.verify(str(model), str(signature))
    except Exception as e:  # the library raises ValueError and its own errors: all mean "fails"
        return SignatureCheck(False, method, f"does not verify with {what}: "
                                             f"{str(e).splitlines()[0][:300]}")
    return SignatureCheck(True, method, f"the files match the bundle signed with {what}")
