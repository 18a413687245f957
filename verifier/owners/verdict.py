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
    return lines + provenance_lines(pred.get("provenance"))


def provenance_lines(section: Any) -> list[str]:
    """The signed provenance section (`verifier.provenance`), shown apart from the verdict."""
    if not isinstance(section, dict):
        return []
    signing, graph = section.get("model_signing") or {}, section.get("graph_signature") or {}
    lines = [f"provenance checked by the registry ({section.get('label')}; never part of the "
             "verdict):", f"  model-signing: {signing.get('status')} - {signing.get('detail')}"]
    if signing.get("key_source"):
        lines.append(f"    key: {signing.get('key_source')}")
    who = (f", signed by registered owner {str(graph['owner_keyid'])[:16]}…"
           if graph.get("owner_keyid") else "")
    lines.append(f"  graph signature: {graph.get('status')}{who} - {graph.get('reason')}")
    lines += [f"    {c.get('kind')}: {c.get('what')} {c.get('detail', '')}".rstrip()
              for c in (graph.get("changes") or [])[:20] if isinstance(c, dict)]
    return lines
