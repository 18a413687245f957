"""The audit's checks of the signed envelope: format, registry key, DSSE, signatures, statement."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from verifier.audit.fields import TOP_LEVEL, is_count
from verifier.audit.state import AuditState
from verifier.evidence.canonical import canonical_json, loads_strict
from verifier.evidence.dsse import PAYLOAD_TYPE_INTOTO, parse_envelope, verify_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import keyid_of, unb64_strict
from verifier.evidence.intoto import parse_statement
from verifier.evidence.note import parse_vkey
from verifier.evidence.report import PREDICATE_TYPE, REPORT_FORMAT


class EnvelopeChecks(AuditState):
    """format, registry key, envelope, signatures and statement; each returns what it established."""

    def check_format(self, report: Mapping[str, Any] | bytes | str) -> str:
        if isinstance(report, (bytes, str)):
            raw = report.encode("utf-8") if isinstance(report, str) else report
            doc = loads_strict(raw, "report")
            if not isinstance(doc, dict):
                raise EvidenceError("report is not a JSON object")
            canon = canonical_json(doc)
            canonical = raw in (canon, canon + b"\n")
            if self.strict_bytes and not canonical:
                raise EvidenceError("report is not in canonical JSON form (sorted keys, no "
                                    "whitespace); audit the bytes exactly as served by "
                                    "/api/reports/<uuid>")
            layout = "canonical bytes" if canonical else "re-formatted JSON, content checked"
        elif isinstance(report, Mapping):
            doc, layout = dict(report), "parsed object"
        else:
            raise EvidenceError(f"report must be JSON bytes or an object, received "
                                f"{type(report).__name__}")
        unknown = sorted(set(doc) - TOP_LEVEL)
        if unknown:
            raise EvidenceError(f"report has unknown field(s) {', '.join(unknown)}; "
                                f"{REPORT_FORMAT} allows {', '.join(sorted(TOP_LEVEL))}")
        if doc.get("format") != REPORT_FORMAT:
            raise EvidenceError(f"report format is {doc.get('format')!r}, expected {REPORT_FORMAT!r}")
        for key in ("envelope", "log", "public_keys"):
            if not isinstance(doc.get(key), dict):
                raise EvidenceError(f"report field {key!r} is missing or not an object")
        log = doc["log"]
        if set(log) != {"index", "bundle", "origin"}:
            raise EvidenceError("report field 'log' must hold exactly index, bundle and origin")
        if not is_count(log["index"]) or not isinstance(log["bundle"], str) \
                or not isinstance(log["origin"], str):
            raise EvidenceError("report log: index must be an integer >= 0, bundle and origin text")
        self.report = doc
        return f"{REPORT_FORMAT} ({layout})"

    def check_registry_key(self) -> str:
        keys = self.report["public_keys"]
        if set(keys) != {"registry"} or not isinstance(keys["registry"], dict) \
                or set(keys["registry"]) not in ({"keyid", "ed25519"}, {"keyid", "ed25519", "vkey"}):
            raise EvidenceError('public_keys must be {"registry": {"keyid", "ed25519", "vkey"}}')
        key = unb64_strict(keys["registry"]["ed25519"], "registry public key", 32)
        if keys["registry"]["keyid"] != keyid_of(key):
            raise EvidenceError("registry keyid does not match the registry public key")
        if "vkey" in keys["registry"]:
            name, vkey_key = parse_vkey(str(keys["registry"]["vkey"]))
            if vkey_key != key or name != self.report["log"]["origin"]:
                raise EvidenceError("the registry vkey names another key or another log origin "
                                    "than the report's")
        self.registry_key = key
        if self.pinned is None:
            return (f"{keyid_of(key)[:16]}… taken from the report (not pinned: pass "
                    "--registry-key to check it is the registry you trust)")
        if bytes(self.pinned) != key:
            raise EvidenceError(f"registry key {keyid_of(key)[:16]}… in the report is not the "
                                f"pinned registry key {_kid(self.pinned)}")
        return f"{keyid_of(key)[:16]}… equals the pinned registry key"

    def check_envelope(self) -> str:
        env = parse_envelope(self.report["envelope"])
        if env.payload_type != PAYLOAD_TYPE_INTOTO:
            raise EvidenceError(f"payloadType is {env.payload_type!r}, expected "
                                f"{PAYLOAD_TYPE_INTOTO!r}")
        return f"DSSE v1, {len(env.signatures)} signature(s), {len(env.payload)}-byte payload"

    def check_signatures(self) -> str:
        registry_id = keyid_of(self.registry_key)
        trusted = {registry_id: self.registry_key}
        required = {registry_id}
        # The owners come from the payload; they are trusted only because the registry's
        # signature over that same payload is required and verified below.
        for owner in _unverified_owners(parse_envelope(self.report["envelope"]).payload):
            trusted[owner[0]] = owner[1]
            if owner[2]:
                required.add(owner[0])
        self.payload = verify_envelope(self.report["envelope"], trusted, required)
        signers = [s["keyid"] for s in self.report["envelope"]["signatures"]]
        return (f"{len(signers)} valid signature(s) over the DSSE PAE: registry "
                f"{registry_id[:16]}…" + "".join(f", owner {k[:16]}…" for k in signers
                                                 if k != registry_id))

    def check_statement(self) -> str:
        st = parse_statement(self.payload)
        if st["predicateType"] != PREDICATE_TYPE:
            raise EvidenceError(f"predicateType is {st['predicateType']!r}, expected "
                                f"{PREDICATE_TYPE!r}")
        if len(st["subject"]) != 1 or "sha256" not in st["subject"][0]["digest"]:
            raise EvidenceError("a report has exactly one subject with a sha256 digest")
        if not isinstance(st.get("predicate"), dict):
            raise EvidenceError("the statement has no predicate")
        self.statement, self.pred = st, st["predicate"]
        self.result.statement = st
        return f"in-toto Statement v1 about sha256:{st['subject'][0]['digest']['sha256'][:16]}…"


def _kid(key: bytes) -> str:
    try:
        return keyid_of(key)[:16] + "…"
    except EvidenceError:
        return "(not a 32-byte key)"


def _unverified_owners(payload: bytes) -> list[tuple[str, bytes, bool]]:
    """(keyid, key, must_sign) of the owners the payload lists, before any signature is checked.

    An owner must sign when listed with "signs": true, or, without "signs", when not "byok".
    """
    try:
        owners = parse_statement(payload)["predicate"]["owners"]
        out = []
        for o in owners:
            key = unb64_strict(o["public_key"], "owner key", 32)
            if o["keyid"] == keyid_of(key):
                out.append((o["keyid"], key, o.get("signs", o.get("byok") is not True) is True))
        return out
    except (EvidenceError, KeyError, TypeError):
        return []
