"""What the audit's steps share: the inputs and what earlier steps established."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from verifier.audit.result import AuditResult

if TYPE_CHECKING:
    from verifier.evidence.cosignature import Witness


class AuditState:
    """The attributes every check reads or sets; `verifier.audit.runner._Auditor` fills them in."""

    pinned: bytes | None  # the registry key the auditor pinned, if any
    since: str | None  # a checkpoint note kept from an earlier audit
    reveal: Sequence[Mapping[str, Any]] | None  # openings published by owners
    strict_bytes: bool  # refuse report bytes that are not exactly canonical JSON
    suspect_path: str | None  # the suspect file, to check its digest and recompute
    consistency_arg: Mapping[str, Any] | None  # a consistency proof passed by the auditor
    result: AuditResult  # the checks run so far
    report: dict[str, Any]  # the parsed report, once its format is checked
    registry_key: bytes  # the report's registry key, once checked
    statement: dict[str, Any]  # the verified in-toto Statement
    pred: dict[str, Any]  # its predicate
    opened: dict[str, Any]  # commitment digest -> verified opening
    payload: bytes  # the DSSE payload, once its signatures verify
    witnesses: list[Witness]  # witnesses the auditor trusts (may be empty)
    quorum: int | None  # cosignatures required (default: every trusted witness)
    logged_times: dict[str, str]  # commitment digest -> time in its proved log entry
