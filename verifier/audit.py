"""Offline audit of a Hallmark report: `hallmark audit REPORT.json` and `verifier.audit.audit`.

THE REPORT FORMAT (hallmark/report/v1), as served by GET /api/reports/<uuid>. The served bytes
should be exactly `canonical_json(report)` (sorted keys, no whitespace, UTF-8). Every byte of
content is covered: the envelope by its signatures and by its log entry (which hashes the
canonical envelope), the proof and checkpoint by the log's signature and the Merkle proof, the
other fields by cross-checks against signed data, with base64 parsed canonically. A re-indented
copy of a report parses to the same content and passes; `strict_bytes=True` (`hallmark audit
--strict`) also refuses any encoding other than the canonical bytes (one trailing newline is
tolerated), so that not even whitespace may change.

    {
      "format": "hallmark/report/v1",
      "envelope": DSSE envelope {"payload": b64, "payloadType": "application/vnd.in-toto+json",
                                 "signatures": [{"keyid": hex, "sig": b64}, ...]},
      "log": {"index": N, "bundle": "<c2sp.org/tlog-proof@v1 text>", "origin": "<log origin>"},
      "public_keys": {"registry": {"keyid": hex, "ed25519": b64}},
      "consistency": {"old_size": m, "new_size": n, "proof": [b64, ...]},           (optional)
      "commitment_proofs": [{"digest": hex, "entry": b64, "bundle": tlog-proof}]   (optional)
    }

The envelope's payload is canonical JSON of an in-toto Statement v1:
    subject: [{"name": suspect name, "digest": {"sha256": suspect file SHA-256}}]
    predicateType: "https://hallmark.dev/verification/v1"
    predicate: {
      "verification": uuid,
      "registry": {"origin", "keyid", "public_key": b64},
      "owners": [{"keyid", "public_key": b64, "byok": bool, "signs": bool (optional), ...}],
      "alpha": family-wise alpha, "tests_run": m (checks not "not applicable"),
      "checks": [{"scheme", "commitment", "model", "owner_keyid", "statistic", "n", "log10_p"
                  (number or "-inf"), "p_value", "null", "alpha" (Holm threshold, null when not
                  applicable), "decision", "queries", "claim", "details"}],
      "verdict": {"attributed": bool, "earliest": digest or null (optional), ...},
      "times": {"submitted", "fetched" (null if the fetch failed), "finished", "signed",
                "first_seen" (optional)}: RFC 3339 UTC, "YYYY-MM-DDTHH:MM:SS[.ffffff]Z",
      "commitments": [{"digest", "scheme", "log_index", "registered_at",
                       "proves_priority" (optional bool), ...}],
      "suspect": {"first_seen": RFC 3339 UTC or null, ...}                          (optional)
    }
Checks, owners, commitments, verdict and suspect may carry further fields (e.g. "model_name");
a check whose decision is "not applicable" or "error" may hold null statistic/n/p/alpha.

Rules checked, in order (the audit stops at the first failure):
  format          strict JSON (no duplicate keys), canonical bytes if strict_bytes, known
                  top-level fields only, format string.
  registry key    public_keys.registry is a valid key whose keyid matches; equal to the pinned key
                  when one is given (otherwise the key in the report is trusted, and said so).
  envelope        DSSE structure; payloadType is in-toto.
  signatures      every signature verifies over PAE(payloadType, payload); every signer is the
                  registry or an owner listed in the predicate (else "unknown key"); the registry
                  and every owner listed with "signs": true (without "signs": every owner
                  without "byok": true) signed (else "signature removed"). A
                  bring-your-own-key owner's key never leaves the owner, so the registry cannot
                  add that signature; if it is present it must verify.
  statement       in-toto Statement v1, predicateType, one subject with a sha256 digest.
  predicate       field types; the predicate's registry key is the report's registry key;
                  owner keyids match their keys; each check names a listed commitment (same
                  scheme) and a listed owner; times are RFC 3339 UTC and in order.
  decisions       tests_run and every decision and per-check alpha follow Holm's procedure at
                  the family alpha over the checks that ran ("attributed"/"not attributed");
                  verdict.attributed is false when no check attributed.
  priority        (when suspect.first_seen is given) proves_priority = registered_at <
                  first_seen (or first_seen is null); verdict.earliest_commitment (if present)
                  is the attributed commitment with priority and the smallest log index, or
                  null; verdict.attributed is true exactly when there is one.
  log inclusion   the entry report_entry(envelope) is included at log.index in the bundle's
                  checkpoint, which is signed by the registry key under the origin name.
  commitment log  (when commitment_proofs are given) each commitment's entry is in the log at
                  its log_index.
  consistency     (with since_checkpoint) the auditor's kept checkpoint is signed by the
                  registry and consistent with the report's checkpoint (report "consistency"
                  member or the `consistency` argument holds the proof). A forked log fails.
  opening …       (with reveal) each opening opens a commitment the report lists, same scheme.
  suspect digest  (with suspect_path) the file's SHA-256 is the statement's subject.
  recompute …     (with reveal and suspect_path) each opened check's statistic, n and log10 p
                  recomputed with the scheme from the suspect file equal the reported ones.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from verifier.evidence.canonical import canonical_json, loads_strict
from verifier.evidence.dsse import PAYLOAD_TYPE_INTOTO, parse_envelope, verify_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64, keyid_of, unb64_strict
from verifier.evidence.intoto import parse_statement
from verifier.evidence.logentry import parse_entry, report_entry
from verifier.evidence.merkle import verify_consistency
from verifier.evidence.note import Checkpoint, verify_checkpoint
from verifier.evidence.proofbundle import parse_bundle, verify_bundle
from verifier.evidence.report import (
    ATTRIBUTED,
    DECISIONS,
    NOT_APPLICABLE,
    NOT_ATTRIBUTED,
    PREDICATE_TYPE,
    REPORT_FORMAT,
)

RAN = (ATTRIBUTED, NOT_ATTRIBUTED)  # decisions of checks that ran (the tests Holm counts)

TOP_LEVEL = {"format", "envelope", "log", "public_keys", "consistency", "commitment_proofs"}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")


class Check(NamedTuple):
    """One audit check: its name, whether it passed, and why (or what it established)."""

    name: str
    ok: bool
    reason: str


@dataclass
class AuditResult:
    """The outcome of `audit`: every check run, in order (the first failure ends the audit)."""

    checks: list[Check] = field(default_factory=list)  # in the order they ran
    statement: dict[str, Any] | None = None  # the verified in-toto Statement, once verified
    checkpoint: Checkpoint | None = None  # the verified checkpoint of the report's log proof
    checkpoint_note: str | None = None  # that checkpoint's signed note (keep it for --since)

    @property
    def ok(self) -> bool:
        """True when at least one check ran and all passed."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failure(self) -> Check | None:
        """The failing check, if any."""
        return next((c for c in self.checks if not c.ok), None)


class _Stop(Exception):
    """Ends the audit after a failed check."""


def audit(report: Mapping[str, Any] | bytes | str, *, registry_key: bytes | None = None,
          since_checkpoint: str | None = None, reveal: Sequence[Mapping[str, Any]] | None = None,
          suspect_path: str | None = None, consistency: Mapping[str, Any] | None = None,
          strict_bytes: bool = False) -> AuditResult:
    """Check a report offline: signatures, structure, log proofs and, optionally, the statistics.

    Args:
        report: the report as served (bytes or text: its canonical form is checked too) or
            already parsed (a dict: the byte-level canonical check is then skipped).
        registry_key: the registry's 32-byte Ed25519 public key, pinned by the auditor.
        since_checkpoint: a signed checkpoint note the auditor kept from an earlier audit.
        reveal: openings ({"scheme","salt","key","commitment"}) published by owners.
        suspect_path: the suspect file, to check its digest and recompute the statistics.
        consistency: {"old_size","new_size","proof"} between `since_checkpoint` and the report's
            checkpoint, when the report does not carry one.
        strict_bytes: refuse report bytes that are not exactly canonical JSON.

    Returns:
        AuditResult with `.ok` and `.checks` (name, ok, reason).

    Example:
        >>> audit(b"{}").failure.name
        'format'
    """
    a = _Auditor(registry_key, since_checkpoint, reveal, suspect_path, consistency, strict_bytes)
    with contextlib.suppress(_Stop):
        a.run(report)
    return a.result


class _Auditor:
    def __init__(self, registry_key: bytes | None, since: str | None,
                 reveal: Sequence[Mapping[str, Any]] | None, suspect_path: str | None,
                 consistency: Mapping[str, Any] | None, strict_bytes: bool) -> None:
        self.pinned, self.since, self.reveal = registry_key, since, reveal
        self.strict_bytes = strict_bytes
        self.suspect_path, self.consistency_arg = suspect_path, consistency
        self.result = AuditResult()
        self.report: dict[str, Any] = {}
        self.registry_key = b""
        self.statement: dict[str, Any] = {}
        self.pred: dict[str, Any] = {}
        self.opened: dict[str, Any] = {}
        self.payload = b""

    def step(self, name: str, fn: Callable[[], str], broad: bool = False) -> None:
        """Run one check; a failure is recorded with its reason and ends the audit."""
        try:
            reason = fn()
        except EvidenceError as e:
            self.result.checks.append(Check(name, False, str(e)))
            raise _Stop from None
        except Exception as e:
            if not broad:
                raise
            self.result.checks.append(Check(name, False, f"{type(e).__name__}: {e}"))
            raise _Stop from None
        self.result.checks.append(Check(name, True, reason))

    def run(self, report: Mapping[str, Any] | bytes | str) -> None:
        self.step("format", lambda: self.check_format(report))
        self.step("registry key", self.check_registry_key)
        self.step("envelope", self.check_envelope)
        self.step("signatures", self.check_signatures)
        self.step("statement", self.check_statement)
        self.step("predicate", self.check_predicate)
        self.step("decisions", self.check_decisions)
        if _has_first_seen(self.pred):
            self.step("priority", self.check_priority)
        self.step("log inclusion", self.check_inclusion)
        if "commitment_proofs" in self.report:
            self.step("commitment log", self.check_commitment_proofs)
        if self.since is not None:
            self.step("consistency", self.check_consistency)
        for n, doc in enumerate(self.reveal or []):
            self.step(f"opening {n + 1}", functools.partial(self.check_opening, doc))
        if self.suspect_path is not None:
            self.step("suspect digest", self.check_suspect_digest)
            self.step("recompute", self.check_recompute, broad=True)

    # --- the checks, each returning what it established --------------------------------------

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
        if not _is_count(log["index"]) or not isinstance(log["bundle"], str) \
                or not isinstance(log["origin"], str):
            raise EvidenceError("report log: index must be an integer >= 0, bundle and origin text")
        self.report = doc
        return f"{REPORT_FORMAT} ({layout})"

    def check_registry_key(self) -> str:
        keys = self.report["public_keys"]
        if set(keys) != {"registry"} or not isinstance(keys["registry"], dict) \
                or set(keys["registry"]) != {"keyid", "ed25519"}:
            raise EvidenceError('public_keys must be {"registry": {"keyid", "ed25519"}}')
        key = unb64_strict(keys["registry"]["ed25519"], "registry public key", 32)
        if keys["registry"]["keyid"] != keyid_of(key):
            raise EvidenceError("registry keyid does not match the registry public key")
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

    def check_predicate(self) -> str:
        p = self.pred
        _require(p, "predicate", {"verification": str, "registry": dict, "owners": list,
                                  "alpha": (int, float), "tests_run": int, "checks": list,
                                  "verdict": dict, "times": dict, "commitments": list})
        reg = p["registry"]
        _require(reg, "predicate.registry", {"origin": str, "keyid": str, "public_key": str})
        if reg["public_key"] != b64(self.registry_key) or reg["keyid"] != keyid_of(self.registry_key):
            raise EvidenceError("the predicate names another registry key than the report's")
        if reg["origin"] != self.report["log"]["origin"]:
            raise EvidenceError(f"log origin {self.report['log']['origin']!r} differs from the "
                                f"signed registry origin {reg['origin']!r}")
        owners = set()
        for n, o in enumerate(p["owners"]):
            _require(o, f"owners[{n}]", {"keyid": str, "public_key": str})
            key = unb64_strict(o["public_key"], f"owners[{n}].public_key", 32)
            if o["keyid"] != keyid_of(key):
                raise EvidenceError(f"owners[{n}].keyid does not match its public key")
            if "byok" in o and not isinstance(o["byok"], bool):
                raise EvidenceError(f"owners[{n}].byok must be true or false")
            owners.add(o["keyid"])
        commitments = {}
        for n, c in enumerate(p["commitments"]):
            _require(c, f"commitments[{n}]", {"digest": str, "scheme": str, "log_index": int,
                                              "registered_at": str})
            if not _HEX64.fullmatch(c["digest"]) or not _is_count(c["log_index"]):
                raise EvidenceError(f"commitments[{n}]: digest must be 64 hex, log_index >= 0")
            _time(c["registered_at"], f"commitments[{n}].registered_at")
            if c["digest"] in commitments:
                raise EvidenceError(f"commitment {c['digest'][:16]}… is listed twice")
            commitments[c["digest"]] = c
        for n, c in enumerate(p["checks"]):
            _require(c, f"checks[{n}]", {"scheme": str, "commitment": str, "model": str,
                                         "owner_keyid": str, "decision": str})
            if c["decision"] not in DECISIONS:
                raise EvidenceError(f"checks[{n}].decision is {c['decision']!r}, expected one "
                                    f"of {', '.join(DECISIONS)}")
            _optional(c, f"checks[{n}]", {"queries": int, "claim": str, "details": dict})
            if c["decision"] in RAN:
                _require(c, f"checks[{n}]", {"statistic": (int, float), "n": int,
                                             "log10_p": (int, float, str),
                                             "p_value": (int, float), "null": str,
                                             "alpha": (int, float)})
                log10_p = _log10(c["log10_p"], f"checks[{n}].log10_p")
                if not math.isclose(c["p_value"], 10.0 ** log10_p, rel_tol=1e-9,
                                    abs_tol=1e-300):
                    raise EvidenceError(f"checks[{n}].p_value {c['p_value']} is not "
                                        "10^log10_p")
            if c["commitment"] not in commitments:
                raise EvidenceError(f"checks[{n}] names commitment {c['commitment'][:16]}…, "
                                    "which the report does not list")
            if commitments[c["commitment"]]["scheme"] != c["scheme"]:
                raise EvidenceError(f"checks[{n}] runs scheme {c['scheme']!r} on a "
                                    f"{commitments[c['commitment']]['scheme']!r} commitment")
            if c["owner_keyid"] not in owners:
                raise EvidenceError(f"checks[{n}] names owner {c['owner_keyid'][:16]}…, who is "
                                    "not among the report's owners")
        t = p["times"]
        order = [_time(t[k], f"times.{k}") if t.get(k) is not None else None
                 for k in ("submitted", "fetched", "finished", "signed")]
        if order[0] is None or order[2] is None or order[3] is None:
            raise EvidenceError("times.submitted, times.finished and times.signed are required")
        present = [x for x in order if x is not None]
        if present != sorted(present):
            raise EvidenceError("times are out of order: expected submitted <= fetched <= "
                                "finished <= signed")
        return (f"{len(p['checks'])} check(s) on {len(commitments)} commitment(s) of "
                f"{len(owners)} owner(s); times in order")

    def check_decisions(self) -> str:
        from verifier.stats import holm

        p = self.pred
        if not 0.0 < p["alpha"] < 1.0:
            raise EvidenceError(f"family alpha {p['alpha']} is not in (0, 1)")
        applicable = [c for c in p["checks"] if c["decision"] in RAN]
        if p["tests_run"] != len(applicable):
            raise EvidenceError(f"tests_run is {p['tests_run']} but {len(applicable)} checks ran")
        decisions = holm([_log10(c["log10_p"], "log10_p") for c in applicable], p["alpha"]) \
            if applicable else []
        for c, d in zip(applicable, decisions, strict=True):
            expected = ATTRIBUTED if d.reject else "not attributed"
            if c["decision"] != expected:
                raise EvidenceError(f"check {c['scheme']} on {c['commitment'][:16]}… says "
                                    f"{c['decision']!r} but Holm at alpha={p['alpha']} gives "
                                    f"{expected!r}")
            if not math.isclose(c["alpha"], d.alpha, rel_tol=1e-9):
                raise EvidenceError(f"check {c['scheme']} on {c['commitment'][:16]}… reports "
                                    f"alpha {c['alpha']} but its Holm threshold is {d.alpha:.3g}")
        attributed = any(c["decision"] == ATTRIBUTED for c in applicable)
        if not isinstance(p["verdict"].get("attributed"), bool):
            raise EvidenceError("verdict.attributed must be true or false")
        if p["verdict"]["attributed"] and not attributed:
            raise EvidenceError("verdict.attributed is true but no check attributed the suspect")
        if attributed and not p["verdict"]["attributed"] and not _has_first_seen(p):
            raise EvidenceError("verdict.attributed is false but a check attributed the suspect "
                                "(and no first sighting is given to deny priority)")
        hits = sum(c["decision"] == ATTRIBUTED for c in applicable)
        return (f"Holm at family alpha {p['alpha']:g} over {len(applicable)} test(s): "
                f"{hits} attributed")

    def check_priority(self) -> str:
        p = self.pred
        raw = p["suspect"]["first_seen"]
        first_seen = None if raw is None else _time(raw, "suspect.first_seen")

        def prior(c: Mapping[str, Any]) -> bool:
            return first_seen is None or _time(c["registered_at"], "registered_at") < first_seen

        for c in p["commitments"]:
            if "proves_priority" in c and c["proves_priority"] is not prior(c):
                raise EvidenceError(f"commitment {c['digest'][:16]}… registered at "
                                    f"{c['registered_at']} is marked proves_priority="
                                    f"{c['proves_priority']} but the suspect was first seen at "
                                    f"{raw}")
        attributed = {c["commitment"] for c in p["checks"] if c["decision"] == ATTRIBUTED}
        valid = sorted((c for c in p["commitments"] if c["digest"] in attributed and prior(c)),
                       key=lambda c: c["log_index"])
        earliest = valid[0]["digest"] if valid else None
        claimed = p["verdict"].get("earliest_commitment", earliest)
        if claimed != earliest:
            raise EvidenceError(f"verdict.earliest_commitment is {claimed!r} but the earliest "
                                f"attributed commitment registered before the first sighting "
                                f"is {earliest!r}")
        if p["verdict"]["attributed"] is not (earliest is not None):
            raise EvidenceError(f"verdict.attributed should be {str(earliest is not None).lower()}"
                                ": only a commitment registered before the suspect was first "
                                "seen can attribute it")
        return (f"earliest valid commitment: {earliest[:16] + '…' if earliest else 'none'} "
                f"({len(attributed) - len(valid)} attributed commitment(s) cannot prove priority)")

    def check_inclusion(self) -> str:
        log = self.report["log"]
        bundle = parse_bundle(log["bundle"])
        if bundle.extra is not None:
            raise EvidenceError("the report's proof bundle carries unauthenticated extra data; "
                                "Hallmark bundles have none")
        if bundle.index != log["index"]:
            raise EvidenceError(f"log.index is {log['index']} but the proof bundle is for index "
                                f"{bundle.index}")
        cp = verify_bundle(report_entry(self.report["envelope"]), log["bundle"], log["origin"],
                           self.registry_key)
        self.result.checkpoint, self.result.checkpoint_note = cp, bundle.checkpoint_note
        return (f"report entry {log['index']} is in {cp.origin} at size {cp.size} (checkpoint "
                "signed by the registry key)")

    def check_commitment_proofs(self) -> str:
        proofs = self.report["commitment_proofs"]
        listed = {c["digest"]: c for c in self.pred["commitments"]}
        if not isinstance(proofs, list) or not proofs:
            raise EvidenceError("commitment_proofs must be a non-empty list")
        for n, item in enumerate(proofs):
            _require(item, f"commitment_proofs[{n}]", {"digest": str, "entry": str, "bundle": str})
            c = listed.get(item["digest"])
            if c is None:
                raise EvidenceError(f"commitment_proofs[{n}] is for a commitment the report "
                                    "does not list")
            entry = unb64_strict(item["entry"], f"commitment_proofs[{n}].entry")
            fields = parse_entry(entry)
            if fields["type"] != "commitment" or fields["commitment"] != c["digest"] \
                    or fields["scheme"] != c["scheme"]:
                raise EvidenceError(f"commitment_proofs[{n}].entry does not log commitment "
                                    f"{c['digest'][:16]}… ({c['scheme']})")
            if "registered_at" in fields and fields["registered_at"] != c["registered_at"]:
                raise EvidenceError(f"commitment_proofs[{n}]: logged time differs from "
                                    "registered_at")
            if parse_bundle(item["bundle"]).index != c["log_index"]:
                raise EvidenceError(f"commitment_proofs[{n}] proves another index than "
                                    f"log_index {c['log_index']}")
            try:
                verify_bundle(entry, item["bundle"], self.report["log"]["origin"],
                              self.registry_key)
            except EvidenceError as e:
                raise EvidenceError(f"commitment {c['digest'][:16]}…: {e}") from None
        return f"{len(proofs)} commitment(s) proved in the log at their log_index"

    def check_consistency(self) -> str:
        origin = self.report["log"]["origin"]
        try:
            kept = verify_checkpoint(self.since or "", origin, self.registry_key)
        except EvidenceError as e:
            raise EvidenceError(f"the kept checkpoint: {e}") from None
        now = self.result.checkpoint
        assert now is not None
        old, new = (kept, now) if kept.size <= now.size else (now, kept)
        if old.size == new.size:
            if old.root != new.root:
                raise EvidenceError(f"the log forked: two checkpoints of size {old.size} with "
                                    "different roots")
            return f"kept checkpoint (size {kept.size}) equals the report's checkpoint"
        c = self.consistency_arg if self.consistency_arg is not None \
            else self.report.get("consistency")
        if c is None:
            raise EvidenceError(f"no consistency proof between sizes {old.size} and {new.size}: "
                                f"fetch /api/reports/<uuid>?since={kept.size} or pass one")
        _require(c, "consistency", {"old_size": int, "new_size": int, "proof": list})
        if (c["old_size"], c["new_size"]) != (old.size, new.size):
            raise EvidenceError(f"the consistency proof is for sizes {c['old_size']} -> "
                                f"{c['new_size']}, needed {old.size} -> {new.size}")
        proof = [unb64_strict(h, f"consistency proof hash {n}", 32)
                 for n, h in enumerate(c["proof"])]
        if not verify_consistency(old.size, new.size, old.root, new.root, proof):
            raise EvidenceError(f"consistency proof fails between sizes {old.size} and "
                                f"{new.size}: the log was forked or rewritten (or the proof "
                                "changed)")
        return f"kept checkpoint (size {kept.size}) is consistent with size {now.size}"

    def check_opening(self, doc: Mapping[str, Any]) -> str:
        from verifier.evidence.commitment import parse_opening

        o = parse_opening(dict(doc))
        listed = {c["digest"]: c for c in self.pred["commitments"]}
        if o.commitment not in listed:
            raise EvidenceError(f"the opening is for commitment {o.commitment[:16]}…, which the "
                                "report does not list")
        if listed[o.commitment]["scheme"] != o.scheme:
            raise EvidenceError(f"the opening is for scheme {o.scheme!r}, the report lists "
                                f"{listed[o.commitment]['scheme']!r}")
        self.opened[o.commitment] = o
        return f"opens commitment {o.commitment[:16]}… ({o.scheme})"

    def check_suspect_digest(self) -> str:
        h = hashlib.sha256()
        try:
            with open(self.suspect_path or "", "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise EvidenceError(f"cannot read suspect file {self.suspect_path}: {e.strerror}") from None
        want = self.statement["subject"][0]["digest"]["sha256"]
        if h.hexdigest() != want:
            raise EvidenceError(f"suspect file has sha256 {h.hexdigest()[:16]}…, the report is "
                                f"about {want[:16]}…")
        return f"sha256:{want[:16]}… matches the report's subject"

    def check_recompute(self) -> str:
        if not self.opened:
            raise EvidenceError("recomputing needs the opened keys: pass --reveal OPENING.json")
        from verifier import schemes
        from verifier.models import load_suspect  # only here: loading models pulls in torch/onnx

        loaded = load_suspect(self.suspect_path or "")
        suspect = getattr(loaded, "suspect", loaded)  # a LoadedModel carries the Suspect
        done = []
        for c in self.pred["checks"]:
            o = self.opened.get(c["commitment"])
            if o is None:
                continue
            module = schemes.get(c["scheme"])
            r = module.test(suspect, module.Key.from_bytes(o.key_blob))
            where = f"{c['scheme']} on {c['commitment'][:16]}…"
            if (c["decision"] == NOT_APPLICABLE) != (not r.applicable):
                raise EvidenceError(f"{where}: applicability differs from the report")
            if r.statistic != c["statistic"] or r.n != c["n"]:
                raise EvidenceError(f"{where}: recomputed statistic {r.statistic} of n={r.n}, "
                                    f"the report says {c['statistic']} of n={c['n']}")
            reported = _log10(c["log10_p"], "log10_p")
            floor = -1e300  # a reported log10 p clamped to a finite floor stands for -inf
            same = (r.log10_p == reported or (r.log10_p <= floor and reported <= floor)
                    or math.isclose(r.log10_p, reported, rel_tol=1e-9, abs_tol=1e-12))
            if not same:
                raise EvidenceError(f"{where}: recomputed log10 p {r.log10_p:.6g}, the report "
                                    f"says {reported:.6g}")
            done.append(f"{c['scheme']} {r.statistic:g}/{r.n}")
        if not done:
            raise EvidenceError("no check in the report uses an opened commitment")
        return f"{len(done)} statistic(s) recomputed and equal: {', '.join(done)}"


# --- small helpers -------------------------------------------------------------------------


def _kid(key: bytes) -> str:
    try:
        return keyid_of(key)[:16] + "…"
    except EvidenceError:
        return "(not a 32-byte key)"


def _is_count(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _require(obj: object, where: str, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Each field present with the given type (bool is never accepted as a number)."""
    if not isinstance(obj, dict):
        raise EvidenceError(f"{where} must be an object")
    for name, kind in fields.items():
        if name not in obj:
            raise EvidenceError(f"{where}.{name} is missing")
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise EvidenceError(f"{where}.{name} has the wrong type ({type(value).__name__})")


def _optional(obj: Mapping[str, Any], where: str,
              fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Fields that may be absent or null, but have the given type when present."""
    for name, kind in fields.items():
        value = obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise EvidenceError(f"{where}.{name} has the wrong type ({type(value).__name__})")


def _has_first_seen(pred: Mapping[str, Any]) -> bool:
    """Does the predicate state when the suspect was first seen (suspect.first_seen)?"""
    return isinstance(pred.get("suspect"), dict) and "first_seen" in pred["suspect"]


def _log10(value: object, where: str) -> float:
    if value == "-inf":
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value > 0:
        raise EvidenceError(f"{where} must be a number <= 0 or \"-inf\", received {value!r}")
    return float(value)


def _time(value: object, where: str) -> datetime:
    if not isinstance(value, str) or not _RFC3339_UTC.fullmatch(value):
        raise EvidenceError(f"{where} must be an RFC 3339 UTC time like 2026-01-02T03:04:05Z, "
                            f"received {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise EvidenceError(f"{where} is not a valid date and time: {value!r}") from None


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
