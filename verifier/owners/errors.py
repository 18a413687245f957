"""The one error type of the owners' tools."""
from __future__ import annotations


class OwnerToolError(ValueError):
    """An owner's input the tools cannot use; the message names the input and the fix."""
