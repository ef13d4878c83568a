"""The one error the reconcile core raises to its caller, after it has already told the user (status and Event)."""

from __future__ import annotations


class ReconcileError(Exception):
    """The pass did not reach the desired state. `temporary`: try again after `retry_after` seconds; otherwise
    only a change to the HelmRelease can help."""

    def __init__(self, reason: str, message: str, *, temporary: bool, retry_after: float = 60.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.temporary = temporary
        self.retry_after = retry_after
