"""What an audit returns: the checks run, in order, and what they established."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from verifier.evidence.note import Checkpoint


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
