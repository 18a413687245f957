"""Registering marked models and reading verdicts through the registry's HTTP API.

Rules of `register`:
- every key file is parsed (and its material re-derived) by its scheme, checked against the
  registry's forgery floor and, unless told otherwise, tested on the model file itself: a
  key that does not test positive on the model it is registered with is refused before
  anything is sent (nothing is left half-registered by a typo in a file name);
- with an owner key (bring-your-own-key), the model and each commitment request are signed
  here, and the registry's private copy of the key is never needed;
- every receipt is checked: a DSSE envelope signed by the registry key it names, over a
  payload whose log index is the one the answer gives.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier import forgery, keyfile
from verifier.client import APIError, Client
from verifier.evidence import dsse
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity, b64, keyid_of, unb64
from verifier.evidence.requests import commitment_request, model_request, sign_request
from verifier.models import ModelFormatError, load_suspect
from verifier.owners.errors import OwnerToolError
from verifier.schemes import UnknownScheme, get
from verifier.schemes import load_key as _load_key

RECEIPT_PAYLOAD_TYPE = "application/vnd.hallmark.receipt+json"
_MAX_WAIT_FOR_THROTTLE = 120.0  # seconds: a longer Retry-After is reported, not waited out


def problem(e: APIError) -> str:
    """An API error as one line: RFC 9457 problem details (title, detail, field errors) or text."""
    body = e.body
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("title", "detail") if body.get(k)]
        errors = body.get("errors")
        if isinstance(errors, dict):
            parts += [f"{k}: {v}" for k, v in errors.items()]
        elif isinstance(errors, list):
            parts += [str(x) for x in errors]
        if not parts:  # DRF's plain {"field": ["message"]} form
            parts = [f"{k}: {v}" for k, v in body.items()]
        text = "; ".join(dict.fromkeys(parts))
    else:
        text = str(body)[:500]
    hint = {401: " (run `hallmark login` or set HALLMARK_TOKEN)",
            429: " (throttled: try again later)"}.get(e.status, "")
    return f"the registry answered HTTP {e.status}: {text}{hint}"


def call(fn: Callable[[], Any], sleep: Callable[[float], None] = time.sleep) -> Any:
    """Call the API once more after a 429 whose Retry-After is short; other errors propagate."""
    try:
        return fn()
    except APIError as e:
        if e.status != 429 or e.retry_after is None or e.retry_after > _MAX_WAIT_FOR_THROTTLE:
            raise
        sleep(e.retry_after)
        return fn()


def artifact_sha256(path: Path) -> str:
    """SHA-256 of the released artifact: the file, or an adapter folder's weights file."""
    target = path / "adapter_model.safetensors" if path.is_dir() else path
    h = hashlib.sha256()
    try:
        with open(target, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise OwnerToolError(f"cannot read {target}: {e.strerror}") from None
    return h.hexdigest()


@dataclass(frozen=True)
class KeyFile:
    """A watermark key ready to upload."""

    path: Path  # where it was read
    blob: bytes  # its exact bytes (committed to)
    scheme: str  # the scheme stored inside
    log10_p_on_model: float | None  # the key's test on the model file (None: not checked)


def prepare_keys(model: Path, paths: list[Path], check_on_model: bool = True) -> list[KeyFile]:
    """Read, parse and check every key file before anything is sent (module rules)."""
    if not paths:
        raise OwnerToolError("give at least one key file (from `hallmark watermark`, or "
                             "Key.to_bytes() of a training-time scheme)")
    suspect = None
    if check_on_model:
        try:
            suspect = load_suspect(model).suspect
        except ModelFormatError as e:
            raise OwnerToolError(f"cannot read the model {model} to check the keys on it: {e}; "
                                 "pass --no-check to register without that check") from None
    out = []
    for path in paths:
        try:
            blob = path.read_bytes()
            key = _load_key(blob)
            scheme = keyfile.scheme_of(blob)
            forgery.check_key_strength(key.best_log10_p(), scheme)
        except OSError as e:
            raise OwnerToolError(f"cannot read key file {path}: {e.strerror}") from None
        except (keyfile.KeyFormatError, UnknownScheme, forgery.WeakKeyError) as e:
            raise OwnerToolError(f"key file {path}: {e}") from None
        log10_p = None
        if suspect is not None:
            result = get(scheme).test(suspect.fresh(), key)
            log10_p = result.log10_p
            if not result.applicable or log10_p > forgery.floor_log10_p():
                raise OwnerToolError(
                    f"key file {path} ({scheme}) does not test positive on {model} "
                    f"(log10 p = {log10_p:.1f}{'' if result.applicable else ', not applicable'}"
                    "): is it the key of this model? Register the marked model with its own "
                    "keys, or pass --no-check (e.g. for a black-box-only scheme on weights)")
        out.append(KeyFile(path, blob, scheme, log10_p))
    return out


def check_receipt(receipt: Any, log_index: Any) -> dict[str, Any]:
    """Verify a receipt's registry signature; return its payload (log_index, integrated_time…).

    This checks integrity against the key the receipt names; `hallmark audit` of a report later
    checks that key against the registry's published one.
    """
    try:
        keys = receipt["public_keys"]["registry"]
        public_key = unb64(keys["ed25519"])
        payload = dsse.verify_envelope(receipt["envelope"], {keyid_of(public_key): public_key},
                                       [keyid_of(public_key)])
        body = json.loads(payload)
    except (KeyError, TypeError, ValueError, EvidenceError) as e:
        raise OwnerToolError(f"the registry's receipt does not verify ({e}); do not rely on "
                             "this registration and report it to the operator") from None
    if body.get("log_index") != log_index:
        raise OwnerToolError(f"the receipt is for log entry {body.get('log_index')}, the answer "
                             f"says {log_index}")
    return dict(body)


@dataclass
class Registration:
    """What `register` did."""

    model: dict[str, Any]  # the model as the registry answered (id, name, version, …)
    commitments: list[dict[str, Any]] = field(default_factory=list)  # answers, with receipts
    receipts: list[dict[str, Any]] = field(default_factory=list)  # verified receipt payloads


def register(client: Client, model: Path, keys: list[KeyFile], *, name: str | None,
             version: str = "1", description: str = "", owner_key: Identity | None = None,
             model_id: str | None = None,
             progress: Callable[[str], None] | None = None) -> Registration:
    """Register the model (or reuse `model_id`) and commit to each key; check every receipt.

    Raises:
        OwnerToolError: the registry refused something; the message says what was registered
            so far and how to finish (`--model-id`).
    """
    say = progress or (lambda _: None)
    if model_id is None:
        if not name:
            raise OwnerToolError("--name is required to register a new model")
        digest = artifact_sha256(model)
        fields: dict[str, Any] = {"version": version, "description": description,
                                  "artifact_sha256": digest}
        if owner_key is not None:
            fields["owner_signature"] = b64(sign_request(owner_key, model_request(
                name, version, digest)))
        try:
            answer = call(lambda: client.register_model(name, **fields))
        except APIError as e:
            hint = ("; your account holds its own key: pass --owner-key OWNER.key"
                    if owner_key is None and isinstance(e.body, dict)
                    and e.body.get("code") == "bad_signature" else "")
            raise OwnerToolError(f"registering the model: {problem(e)}{hint}") from None
        reg = Registration(answer)
        reg.receipts.append(check_receipt(answer.get("receipt"), answer.get("log_index")))
        say(f"model {answer['id']} registered (log index {answer['log_index']})")
    else:
        reg = Registration({"id": model_id})
    for key in keys:
        sig = None
        if owner_key is not None:
            sig = b64(sign_request(owner_key, commitment_request(
                str(reg.model["id"]), key.scheme, hashlib.sha256(key.blob).hexdigest())))
        try:
            c = call(functools.partial(client.add_commitment, str(reg.model["id"]), key.blob, sig))
        except APIError as e:
            done = ", ".join(str(x["scheme"]) for x in reg.commitments) or "none"
            raise OwnerToolError(
                f"committing {key.path} ({key.scheme}): {problem(e)}. Model {reg.model['id']} "
                f"holds the commitments made so far ({done}); add the rest with "
                f"`hallmark register --model-id {reg.model['id']} MODEL KEY...`") from None
        reg.commitments.append(c)
        reg.receipts.append(check_receipt(c.get("receipt"), c.get("log_index")))
        say(f"{key.scheme} commitment {c['digest'][:16]}… logged at index {c['log_index']}")
    return reg
