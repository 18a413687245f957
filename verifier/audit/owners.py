"""The audit's checks of owners' evidence: logged owner statements and countersignatures."""
from __future__ import annotations

from verifier.audit.fields import parse_time, require
from verifier.audit.state import AuditState
from verifier.evidence.canonical import loads_strict
from verifier.evidence.dsse import verify_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import keyid_of, unb64_strict
from verifier.evidence.owners import (
    OWNER_PAYLOAD_TYPE,
    OWNER_STATEMENT,
    countersignature_entry,
    owner_entry,
    verify_countersignature,
)
from verifier.evidence.proofbundle import verify_bundle


class OwnerChecks(AuditState):
    """owner log and countersignatures; each returns what it established."""

    def _owner_keys(self) -> dict[str, bytes]:
        return {o["keyid"]: unb64_strict(o["public_key"], "owner key", 32)
                for o in self.pred["owners"]}

    def _prove(self, entry: bytes, bundle: str, where: str) -> int:
        try:
            return verify_bundle(entry, bundle, self.report["log"]["origin"],
                                 self.registry_key).size
        except EvidenceError as e:
            raise EvidenceError(f"{where}: {e}") from None

    def check_owner_proofs(self) -> str:
        items = self.report["owner_proofs"]
        if not isinstance(items, list) or not items:
            raise EvidenceError("owner_proofs must be a non-empty list")
        owners, reg = self._owner_keys(), keyid_of(self.registry_key)
        for n, item in enumerate(items):
            where = f"owner_proofs[{n}]"
            require(item, where, {"keyid": str, "statement": dict, "entry": str, "bundle": str})
            key = owners.get(item["keyid"])
            if key is None:
                raise EvidenceError(f"{where} is for an owner the report does not list")
            payload = verify_envelope(item["statement"], {reg: self.registry_key,
                                                          item["keyid"]: key}, {reg})
            if item["statement"]["payloadType"] != OWNER_PAYLOAD_TYPE:
                raise EvidenceError(f"{where}: the statement's payloadType is not "
                                    f"{OWNER_PAYLOAD_TYPE!r}")
            st = loads_strict(payload, f"{where}.statement payload")
            if not isinstance(st, dict) or st.get("type") != OWNER_STATEMENT \
                    or st.get("keyid") != item["keyid"] or st.get("public_key") != \
                    self.pred_owner_b64(item["keyid"]):
                raise EvidenceError(f"{where}: the signed owner statement is not about owner "
                                    f"{item['keyid'][:16]}…")
            signed = {s["keyid"] for s in item["statement"]["signatures"]}
            if st.get("byok") is False and item["keyid"] not in signed:
                raise EvidenceError(f"{where}: the registry holds this owner's key but the "
                                    "owner statement lacks its proof-of-possession signature")
            entry = unb64_strict(item["entry"], f"{where}.entry")
            if entry != owner_entry(item["statement"], key):
                raise EvidenceError(f"{where}.entry is not the log entry of this owner statement")
            self._prove(entry, item["bundle"], where)
        return f"{len(items)} owner statement(s) signed by the registry and proved in the log"

    def pred_owner_b64(self, keyid: str) -> str | None:
        return next((o["public_key"] for o in self.pred["owners"] if o["keyid"] == keyid), None)

    def check_countersignatures(self) -> str:
        items = self.report["countersignatures"]
        if not isinstance(items, list) or not items:
            raise EvidenceError("countersignatures must be a non-empty list")
        owners, done = self._owner_keys(), []
        envelope = self.report["envelope"]
        for n, item in enumerate(items):
            where = f"countersignatures[{n}]"
            require(item, where, {"keyid": str, "sig": str, "signed_at": str, "entry": str,
                                  "bundle": str})
            key = owners.get(item["keyid"])
            if key is None:
                raise EvidenceError(f"{where} is by a key that is not one of the report's owners")
            parse_time(item["signed_at"], f"{where}.signed_at")
            verify_countersignature(envelope, key, item["sig"])
            entry = unb64_strict(item["entry"], f"{where}.entry")
            if entry != countersignature_entry(envelope, item["keyid"], item["sig"],
                                               item["signed_at"]):
                raise EvidenceError(f"{where}.entry is not the log entry of this "
                                    "countersignature (keyid, sig or signed_at changed)")
            self._prove(entry, item["bundle"], where)
            done.append(f"owner {item['keyid'][:16]}… at {item['signed_at']}")
        return f"{len(done)} countersignature(s) verify and are logged: " + "; ".join(done)
