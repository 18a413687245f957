"""A report's verdict in a few lines, after an offline audit of the report (`verifier.audit`).

Only an audited statement is summarized: a report that fails its audit is never shown as a
verdict.
"""
from __future__ import annotations

from typing import Any

from verifier.audit import AuditResult, audit


def audit_report(doc: Any) -> AuditResult:
    """Audit a report as fetched (signatures, log inclusion, checkpoint) without trusting it."""
    return audit(doc)


def verdict_lines(statement: dict[str, Any]) -> list[str]:
    """The verdict and one line per check, from an audited in-toto Statement."""
    pred = statement["predicate"]
    verdict = pred["verdict"]
    if verdict["attributed"]:
        head = (f"verdict: ATTRIBUTED to owner {str(verdict['owner_keyid'])[:16]}… "
                f"(model {verdict['model']})")
    else:
        head = "verdict: not attributed (no check reached both Holm's threshold and the forgery floor)"
    lines = [head, f"  {pred['tests_run']} test(s), Holm correction at alpha = {pred['alpha']}"]
    for check in pred["checks"]:
        p = check["log10_p"]
        shown = "n/a" if p is None else f"log10 p = {p:.1f}"
        lines.append(f"  {check['scheme']:<17} {check['decision']:<24} {shown} "
                     f"({check['statistic']}/{check['n']})")
    if verdict.get("disputed"):
        lines.append("  DISPUTED: checks attribute the suspect to more than one owner")
    return lines
