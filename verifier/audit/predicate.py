"""The audit's checks of the signed claims: predicate fields, Holm decisions, priority."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from verifier.audit.fields import (
    HEX64,
    RAN,
    has_first_seen,
    is_count,
    optional,
    parse_log10,
    parse_time,
    require,
)
from verifier.audit.state import AuditState
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64, keyid_of, unb64_strict
from verifier.evidence.report import (
    ATTRIBUTED,
    DECISIONS,
    FORGEABLE,
    SCREENINGS,
    decide,
    forgery_field,
)

_SIGNING_STATUSES = ("valid", "invalid", "unverified", "absent")  # verifier.provenance.publisher
_GRAPH_STATUSES = ("intact", "changed", "unsigned", "invalid", "absent", "error")


def _check_provenance(section: object) -> None:
    """The declared-provenance section (reports since issue 17) is labelled, states that it
    does not affect the verdict, and uses known statuses."""
    if not isinstance(section, dict):
        raise EvidenceError("predicate.provenance must be an object")
    require(section, "predicate.provenance", {"label": str, "model_signing": dict,
                                              "graph_signature": dict})
    if section.get("affects_verdict") is not False:
        raise EvidenceError("predicate.provenance.affects_verdict must be false: declared "
                            "provenance is shown beside the verdict, never in it")
    if section["model_signing"].get("status") not in _SIGNING_STATUSES:
        raise EvidenceError("predicate.provenance.model_signing.status is "
                            f"{section['model_signing'].get('status')!r}, expected one of "
                            f"{', '.join(_SIGNING_STATUSES)}")
    if section["graph_signature"].get("status") not in _GRAPH_STATUSES:
        raise EvidenceError("predicate.provenance.graph_signature.status is "
                            f"{section['graph_signature'].get('status')!r}, expected one of "
                            f"{', '.join(_GRAPH_STATUSES)}")


class PredicateChecks(AuditState):
    """predicate, decisions and priority; each returns what it established."""

    def check_predicate(self) -> str:
        p = self.pred
        require(p, "predicate", {"verification": str, "registry": dict, "owners": list,
                                 "alpha": (int, float), "tests_run": int, "checks": list,
                                 "verdict": dict, "times": dict, "commitments": list})
        reg = p["registry"]
        require(reg, "predicate.registry", {"origin": str, "keyid": str, "public_key": str})
        if reg["public_key"] != b64(self.registry_key) or reg["keyid"] != keyid_of(self.registry_key):
            raise EvidenceError("the predicate names another registry key than the report's")
        if reg["origin"] != self.report["log"]["origin"]:
            raise EvidenceError(f"log origin {self.report['log']['origin']!r} differs from the "
                                f"signed registry origin {reg['origin']!r}")
        owners = set()
        for n, o in enumerate(p["owners"]):
            require(o, f"owners[{n}]", {"keyid": str, "public_key": str})
            key = unb64_strict(o["public_key"], f"owners[{n}].public_key", 32)
            if o["keyid"] != keyid_of(key):
                raise EvidenceError(f"owners[{n}].keyid does not match its public key")
            if "byok" in o and not isinstance(o["byok"], bool):
                raise EvidenceError(f"owners[{n}].byok must be true or false")
            owners.add(o["keyid"])
        commitments = {}
        for n, c in enumerate(p["commitments"]):
            require(c, f"commitments[{n}]", {"digest": str, "scheme": str, "log_index": int,
                                             "registered_at": str})
            if not HEX64.fullmatch(c["digest"]) or not is_count(c["log_index"]):
                raise EvidenceError(f"commitments[{n}]: digest must be 64 hex, log_index >= 0")
            parse_time(c["registered_at"], f"commitments[{n}].registered_at")
            if c["digest"] in commitments:
                raise EvidenceError(f"commitment {c['digest'][:16]}… is listed twice")
            commitments[c["digest"]] = c
        for n, c in enumerate(p["checks"]):
            require(c, f"checks[{n}]", {"scheme": str, "commitment": str, "model": str,
                                        "owner_keyid": str, "decision": str})
            if c["decision"] not in DECISIONS:
                raise EvidenceError(f"checks[{n}].decision is {c['decision']!r}, expected one "
                                    f"of {', '.join(DECISIONS)}")
            optional(c, f"checks[{n}]", {"queries": int, "claim": str, "details": dict,
                                         "screening": str})
            if c.get("screening") not in (None, *SCREENINGS):
                raise EvidenceError(f"checks[{n}].screening is {c['screening']!r}, expected one "
                                    f"of {', '.join(SCREENINGS)}")
            if c["decision"] in RAN:
                require(c, f"checks[{n}]", {"statistic": (int, float), "n": int,
                                            "log10_p": (int, float, str),
                                            "p_value": (int, float), "null": str,
                                            "alpha": (int, float)})
                log10_p = parse_log10(c["log10_p"], f"checks[{n}].log10_p")
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
        if "scan" in p:
            _check_scan(p["scan"], len(p["checks"]))
        t = p["times"]
        order = [parse_time(t[k], f"times.{k}") if t.get(k) is not None else None
                 for k in ("submitted", "fetched", "finished", "signed")]
        if order[0] is None or order[2] is None or order[3] is None:
            raise EvidenceError("times.submitted, times.finished and times.signed are required")
        present = [x for x in order if x is not None]
        if present != sorted(present):
            raise EvidenceError("times are out of order: expected submitted <= fetched <= "
                                "finished <= signed")
        if "provenance" in p:
            _check_provenance(p["provenance"])
        return (f"{len(p['checks'])} check(s) on {len(commitments)} commitment(s) of "
                f"{len(owners)} owner(s); times in order")

    def check_decisions(self) -> str:
        from verifier.stats import holm

        p = self.pred
        if not 0.0 < p["alpha"] < 1.0:
            raise EvidenceError(f"family alpha {p['alpha']} is not in (0, 1)")
        floor = p.get("min_forgery_bits")
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor > 0:
            raise EvidenceError(f"min_forgery_bits must be a number > 0 (the registry's forgery "
                                f"floor), received {floor!r}")
        applicable = [c for c in p["checks"] if c["decision"] in RAN]
        if p["tests_run"] != len(applicable):
            raise EvidenceError(f"tests_run is {p['tests_run']} but {len(applicable)} checks ran")
        logs = [parse_log10(c["log10_p"], "log10_p") for c in applicable]
        decisions = holm(logs, p["alpha"]) if applicable else []
        for c, log10_p, d in zip(applicable, logs, decisions, strict=True):
            where = f"check {c['scheme']} on {c['commitment'][:16]}…"
            require(c, where, {"forgery_bits": (int, float, str)})
            if not isinstance(c.get("may_attribute"), bool):
                raise EvidenceError(f"{where}: may_attribute must be true or false")
            bits = forgery_field(log10_p)
            if not (c["forgery_bits"] == bits or (
                    isinstance(bits, float) and isinstance(c["forgery_bits"], (int, float))
                    and math.isclose(c["forgery_bits"], bits, rel_tol=1e-9, abs_tol=1e-9))):
                raise EvidenceError(f"{where} states a forgery cost of {c['forgery_bits']} bits "
                                    f"but its log10 p {log10_p} gives {bits}")
            expected = decide(d.reject, log10_p, c["may_attribute"], floor)
            if c["decision"] != expected:
                raise EvidenceError(f"{where} says {c['decision']!r} but Holm at alpha="
                                    f"{p['alpha']} and a forgery floor of {floor:g} bits give "
                                    f"{expected!r}")
            if not math.isclose(c["alpha"], d.alpha, rel_tol=1e-9):
                raise EvidenceError(f"{where} reports alpha {c['alpha']} but its Holm threshold "
                                    f"is {d.alpha:.3g}")
        attributed = any(c["decision"] == ATTRIBUTED for c in applicable)
        if not isinstance(p["verdict"].get("attributed"), bool):
            raise EvidenceError("verdict.attributed must be true or false")
        if p["verdict"]["attributed"] and not attributed:
            raise EvidenceError("verdict.attributed is true but no check attributed the suspect")
        if attributed and not p["verdict"]["attributed"] and not has_first_seen(p):
            raise EvidenceError("verdict.attributed is false but a check attributed the suspect "
                                "(and no first sighting is given to deny priority)")
        hits = sum(c["decision"] == ATTRIBUTED for c in applicable)
        forgeable = sum(c["decision"] == FORGEABLE for c in applicable)
        return (f"Holm at family alpha {p['alpha']:g} over {len(applicable)} test(s), forgery "
                f"floor {floor:g} bits: {hits} attributed, {forgeable} significant but forgeable")

    def check_priority(self) -> str:
        p = self.pred
        raw = p["suspect"]["first_seen"]
        first_seen = None if raw is None else parse_time(raw, "suspect.first_seen")

        def prior(c: Mapping[str, Any]) -> bool:
            return (first_seen is None
                    or parse_time(c["registered_at"], "registered_at") < first_seen)

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

    def check_outcome(self) -> str:
        """verdict.outcome: "attributed" with an attribution, else "inconclusive" when any check
        is an "error", else "not attributed"."""
        from verifier.evidence.report import ERROR, INCONCLUSIVE, OUTCOMES

        verdict = self.pred["verdict"]
        missing = sum(c["decision"] == ERROR for c in self.pred["checks"])
        if verdict["outcome"] not in OUTCOMES:
            raise EvidenceError(f"verdict.outcome is {verdict['outcome']!r}, expected one of "
                                f"{', '.join(OUTCOMES)}")
        expected = (ATTRIBUTED if verdict["attributed"] else INCONCLUSIVE if missing
                    else "not attributed")
        if verdict["outcome"] != expected:
            raise EvidenceError(f"verdict.outcome is {verdict['outcome']!r} but the checks give "
                                f"{expected!r} ({missing} check(s) did not run; with none "
                                "attributed the outcome must be 'inconclusive')" if missing else
                                f"verdict.outcome is {verdict['outcome']!r} but the checks "
                                f"give {expected!r}")
        if verdict.get("checks_missing", missing) != missing:
            raise EvidenceError(f"verdict.checks_missing is {verdict['checks_missing']!r} but "
                                f"{missing} check(s) are in error")
        return f"{expected} ({missing} check(s) did not run)"


def _check_scan(scan: Any, rows: int) -> None:
    """A scan's selection must add up: one check row per candidate, and the registry's
    commitments = candidates + those counted as not applicable (per scheme)."""
    if not isinstance(scan, dict):
        raise EvidenceError("scan must be an object")
    require(scan, "scan", {"commitments": int, "candidates": int, "not_applicable": dict})
    counts = scan["not_applicable"]
    if not all(isinstance(k, str) and is_count(v) for k, v in counts.items()) or not (
            is_count(scan["commitments"]) and is_count(scan["candidates"])):
        raise EvidenceError("scan counts must be integers >= 0")
    if scan["candidates"] != rows:
        raise EvidenceError(f"scan.candidates is {scan['candidates']} but the report has "
                            f"{rows} check rows (one per candidate)")
    if scan["commitments"] != scan["candidates"] + sum(counts.values()):
        raise EvidenceError(f"scan.commitments is {scan['commitments']} but {scan['candidates']} "
                            f"candidates and {sum(counts.values())} not applicable add up to "
                            f"{scan['candidates'] + sum(counts.values())}")
