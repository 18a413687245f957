"""Offline audit of a Hallmark report: `hallmark audit REPORT.json` and `verifier.audit.audit`.

The package imports one way, each module only from those below it:
    result     AuditResult, Check (what an audit returns)
    fields     field checks shared by the steps
    state      what the steps share (imports result)
    envelope, predicate, log, witnesses, owners, reveal   the steps (import state, fields)
    runner     `audit`: runs the steps in order (imports all of the above)

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
      "public_keys": {"registry": {"keyid": hex, "ed25519": b64, "vkey": C2SP vkey}},
      "consistency": {"old_size": m, "new_size": n, "proof": [b64, ...]},           (optional)
      "commitment_proofs": [{"digest": hex, "entry": b64, "bundle": tlog-proof}]   (optional)
      "owner_proofs": [{"keyid", "statement": DSSE, "entry": b64, "bundle"}]       (optional)
      "countersignatures": [{"keyid", "sig": b64, "signed_at", "entry", "bundle"}] (optional)
    }
A bundle's checkpoint may carry witness cosignatures (verifier.evidence.cosignature).

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
      "verdict": {"attributed": bool, "earliest": digest or null (optional),
                  "outcome": "attributed" | "not attributed" | "inconclusive" (optional),
                  "checks_missing": count of "error" checks (optional), ...},
      "times": {"submitted", "fetched" (null if the fetch failed), "finished", "signed",
                "first_seen" (optional)}: RFC 3339 UTC, "YYYY-MM-DDTHH:MM:SS[.ffffff]Z",
      "commitments": [{"digest", "scheme", "log_index", "registered_at",
                       "proves_priority" (optional bool), ...}],
      "suspect": {"first_seen": RFC 3339 UTC or null, ...}                          (optional)
      "provenance": {"label", "affects_verdict": false, "model_signing": {"status", ...},
                     "graph_signature": {"status", ...}}     (optional; verifier.provenance)
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
                  scheme) and a listed owner; times are RFC 3339 UTC and in order; a
                  provenance section (if present) has its label and parts, known statuses,
                  and affects_verdict false (declared provenance never decides).
  decisions       tests_run and every decision and per-check alpha follow Holm's procedure at
                  the family alpha over the checks that ran ("attributed"/"not attributed");
                  verdict.attributed is false when no check attributed.
  outcome         verdict.outcome (if present) is "attributed" when verdict.attributed, else
                  "inconclusive" when some check is an "error" (did not run), else "not
                  attributed"; verdict.checks_missing (if present) counts the "error" checks.
  priority        (when suspect.first_seen is given) proves_priority = registered_at <
                  first_seen (or first_seen is null); verdict.earliest_commitment (if present)
                  is the attributed commitment with priority and the smallest log index, or
                  null; verdict.attributed is true exactly when there is one.
  log inclusion   the entry report_entry(envelope) is included at log.index in the bundle's
                  checkpoint, which is signed by the registry key under the origin name.
  commitment log  (when commitment_proofs are given) every attributed commitment has one; each
                  commitment's entry is in the log at its log_index and names the checks' owner.
  priority proofs (with commitment_proofs and suspect.first_seen) each commitment marked
                  proves_priority was logged (the time in its proved entry) before first_seen.
  owner log       (when owner_proofs are given) each owner statement is signed by the registry
                  (and by the owner unless byok), is about a listed owner, and is in the log.
  countersignatures (when given) each is by a listed owner over the envelope's DSSE PAE, its
                  entry matches, and it is in the log; says who signed when.
  witnesses       (with witnesses) every checkpoint in the report carries at least `quorum`
                  valid cosignatures by the trusted witnesses; an invalid one fails.
  consistency     (with since_checkpoint) the auditor's kept checkpoint is signed by the
                  registry and consistent with the report's checkpoint (report "consistency"
                  member or the `consistency` argument holds the proof). A forked log fails.
  opening …       (with reveal) each opening opens a commitment the report lists, same scheme.
  suspect digest  (with suspect_path) the file's SHA-256 is the statement's subject.
  recompute       (with reveal and suspect_path) each opened check's statistic, n and log10 p
                  recomputed with the scheme from the suspect file equal the reported ones.
"""
from verifier.audit.fields import RAN, TOP_LEVEL
from verifier.audit.result import AuditResult, Check
from verifier.audit.runner import audit

__all__ = ["RAN", "TOP_LEVEL", "AuditResult", "Check", "audit"]
