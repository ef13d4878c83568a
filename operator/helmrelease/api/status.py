"""``HelmRelease.status`` as pydantic models: the Flux v1 fields plus the memory the reconcile loop keeps.

The status is where the next-action function remembers what it did: the digest it last applied and attempted,
the generation of the attempt, the Helm revision it made, and the last Helm action with its failure count.
Every field here is declared in ``crds/helmrelease.yaml``, or the apiserver would prune it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import field_validator

from helmrelease.api.constants import Action, ConditionStatus, ConditionType, Phase
from helmrelease.api.spec import ApiModel


class Condition(ApiModel):
    """One ``status.conditions[]`` entry (the Flux v1 shape, with ``lastUpdateTime``)."""

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_update_time: datetime | None = None
    last_transition_time: datetime | None = None


def _known_or_none(enum: type[Phase] | type[Action], value: Any) -> Any:
    """A value this version does not know (say, an older operator's phase) reads as unset, not as an error."""
    if value is None or isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        return None


class HelmReleaseStatus(ApiModel):
    observed_generation: int | None = None
    phase: Phase | None = None
    release_name: str | None = None
    #: The namespace of ``release_name`` (the target namespace when it was recorded), to find it after a change.
    release_namespace: str | None = None
    release_status: str | None = None
    #: Chart version (repository charts) or git commit (git charts) of the deployed release.
    revision: str | None = None
    last_attempted_revision: str | None = None
    rollback_count: int = 0
    conditions: tuple[Condition, ...] = ()
    #: sha256 of the chart and values of the release we last installed or upgraded successfully.
    last_applied_digest: str | None = None
    last_attempted_digest: str | None = None
    last_attempted_generation: int | None = None
    #: Helm's revision number of the release after our last action on it.
    helm_revision: int | None = None
    #: Consecutive failed Helm actions; 0 after any action succeeds.
    failures: int = 0
    last_action: Action | None = None
    last_drift_check: datetime | None = None
    #: When the retry after a cluster-side failure of the last action is due (unset: none is planned).
    retry_at: datetime | None = None
    #: Consecutive cluster-side failures of the current configuration, which the retry backoff grows with.
    cluster_failures: int = 0
    #: The tokens of the ``reconcile.fluxcd.io/*`` annotations last handled (see ``reconcile.requests``), as
    #: Flux v2 echoes them: a token is acted on once, and a client waits for its echo.
    last_handled_reconcile_at: str | None = None
    last_handled_force_at: str | None = None
    last_handled_reset_at: str | None = None

    @field_validator("phase", mode="before")
    @classmethod
    def _phase(cls, value: Any) -> Any:
        return _known_or_none(Phase, value)

    @field_validator("last_action", mode="before")
    @classmethod
    def _action(cls, value: Any) -> Any:
        return _known_or_none(Action, value)

    def condition(self, condition_type: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)

    def as_patch(self) -> dict[str, Any]:
        """The status as a JSON merge patch: unset fields are ``null``, removing what an earlier write left.

        Fields we do not model (``status.kopf``, kopf's progress storage) are not in the patch, so they
        survive.
        """
        return self.model_dump(mode="json", by_alias=True)
