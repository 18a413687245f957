"""The audit's checks with owners' openings and the suspect file: openings, digest, recompute."""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from verifier.audit.fields import parse_log10
from verifier.audit.state import AuditState
from verifier.evidence.errors import EvidenceError
from verifier.evidence.report import NOT_APPLICABLE


class RevealChecks(AuditState):
    """opening N, suspect digest and recompute; each returns what it established."""

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
        hub = self.pred.get("suspect", {}).get("hub")
        if hub is not None:  # a Hub repo: the subject binds what was read (range reads)
            from verifier.audit.hubsuspect import check_hub_digest

            return check_hub_digest(hub, self.statement["subject"][0]["digest"]["sha256"],
                                    self.suspect_path or "")
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

        hub = self.pred.get("suspect", {}).get("hub")
        if hub is not None:
            from verifier.audit.hubsuspect import hub_suspect

            suspect = hub_suspect(hub, self.suspect_path or "")
        else:
            suspect = load_suspect(self.suspect_path or "").suspect
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
            reported = parse_log10(c["log10_p"], "log10_p")
            floor = -1e300  # a reported log10 p clamped to a finite floor stands for -inf
            same = (r.log10_p == reported or (r.log10_p <= floor and reported <= floor)
                    or math.isclose(r.log10_p, reported, rel_tol=1e-9, abs_tol=1e-12))
            if not same:
                raise EvidenceError(f"{where}: recomputed log10 p {r.log10_p:.6g}, the report "
                                    f"says {reported:.6g}")
            if r.applicable and c.get("may_attribute", True) is not r.may_attribute:
                raise EvidenceError(f"{where}: the scheme says may_attribute={r.may_attribute} "
                                    f"(integrity-only evidence never names an owner), the report "
                                    f"says {c.get('may_attribute')}")
            done.append(f"{c['scheme']} {r.statistic:g}/{r.n}")
        if not done:
            raise EvidenceError("no check in the report uses an opened commitment")
        return f"{len(done)} statistic(s) recomputed and equal: {', '.join(done)}"
