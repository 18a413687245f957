"""The one error type of `verifier.evidence`: evidence that does not check out."""
from __future__ import annotations


class EvidenceError(ValueError):
    """Evidence (an envelope, statement, proof, note, opening or key) that is malformed or fails
    verification. The message names the problem, what was received and, where one exists, the fix.

    Example:
        >>> raise EvidenceError("unknown key 3f2a…: the envelope was signed by a key that is "
        ...                     "not listed in the report")
        Traceback (most recent call last):
        ...
        verifier.evidence.errors.EvidenceError: unknown key 3f2a…: the envelope was signed by a key that is not listed in the report
    """
