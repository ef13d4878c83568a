"""Flux v2's request annotations on a HelmRelease: which tokens are new, and so what a pass is asked to do.

The rules are fluxcd/pkg/apis/meta's, so `flux reconcile hr` habits and scripts work unchanged::

    reconcile.fluxcd.io/requestedAt: T   a pass now; T is echoed in status.lastHandledReconcileAt once it is done
    reconcile.fluxcd.io/forceAt: T       with requestedAt: T, one install or upgrade whatever held the release back
                                         (a failure waiting for a change, retries used up); lastHandledForceAt: T
    reconcile.fluxcd.io/resetAt: T       with requestedAt: T, the failure and rollback counters are zeroed and the
                                         last attempt forgotten, so retries start over; lastHandledResetAt: T

A token equal to the one last handled asks for nothing: re-applying the same annotations does nothing. A forceAt or
resetAt whose token differs from requestedAt's is not honoured (a client sets both to one value). Tokens longer than
`TOKEN_MAX` are no request: echoing them would let one object bloat its own status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from helmrelease.api.constants import (
    FORCE_REQUEST_ANNOTATION,
    RECONCILE_REQUEST_ANNOTATION,
    RESET_REQUEST_ANNOTATION,
)
from helmrelease.api.status import HelmReleaseStatus

#: Clients write a timestamp or a counter; anything longer is not one.
TOKEN_MAX: Final = 256


@dataclass(frozen=True)
class Requests:
    """The new tokens: each is None unless its request is pending (not handled yet)."""

    reconcile: str | None = None
    force: str | None = None
    reset: str | None = None

    def __bool__(self) -> bool:
        return any(token is not None for token in (self.reconcile, self.force, self.reset))


def pending_requests(annotations: Mapping[str, str], status: HelmReleaseStatus) -> Requests:
    """What the annotations ask that `status` does not record as handled."""
    requested = annotations.get(RECONCILE_REQUEST_ANNOTATION)
    if not isinstance(requested, str) or not requested or len(requested) > TOKEN_MAX:
        return Requests()

    def paired(annotation: str, handled: str | None) -> str | None:
        return requested if annotations.get(annotation) == requested and requested != handled else None

    return Requests(
        reconcile=requested if requested != status.last_handled_reconcile_at else None,
        force=paired(FORCE_REQUEST_ANNOTATION, status.last_handled_force_at),
        reset=paired(RESET_REQUEST_ANNOTATION, status.last_handled_reset_at),
    )


def pending_in(body: Mapping[str, Any]) -> Requests:
    """`pending_requests` of an object as the API returns it; a status that does not parse handled nothing."""
    metadata = body.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping):
        return Requests()
    try:
        status = HelmReleaseStatus.model_validate(body.get("status") or {})
    except ValueError:
        status = HelmReleaseStatus()
    return pending_requests({str(k): v for k, v in annotations.items() if isinstance(v, str)}, status)


def wants_a_pass(body: Mapping[str, Any], *, retrying: bool) -> bool:
    """Whether an annotation change of `body` calls for a pass: a pending request, or the retry of a pass that
    failed (whose tokens that pass already echoed, so they no longer look pending)."""
    return retrying or bool(pending_in(body))
