"""The status model and the antecedent annotation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from helmrelease.api.constants import Action, ConditionStatus, ConditionType, HelmStatus, Phase
from helmrelease.api.ownership import Ownership, antecedent_value, ownership_of
from helmrelease.api.status import Condition, HelmReleaseStatus

FLUX_V1_STATUS = {
    "observedGeneration": 4,
    "phase": "Succeeded",
    "releaseName": "apps-podinfo",
    "releaseStatus": "deployed",
    "revision": "6.5.0",
    "lastAttemptedRevision": "6.5.0",
    "rollbackCount": 1,
    "valuesChecksum": "f00d",  # Flux v1 wrote this; we do not
    "conditions": [
        {
            "type": "Released",
            "status": "True",
            "lastUpdateTime": "2026-01-01T10:00:00Z",
            "lastTransitionTime": "2026-01-01T09:00:00Z",
            "reason": "Succeeded",
            "message": "Release was successful for Helm release 'apps-podinfo' in 'apps'.",
        }
    ],
}


def test_reads_a_status_written_by_flux_v1() -> None:
    status = HelmReleaseStatus.model_validate(FLUX_V1_STATUS)
    assert (status.observed_generation, status.phase, status.revision, status.rollback_count) == (
        4,
        Phase.SUCCEEDED,
        "6.5.0",
        1,
    )
    released = status.condition(ConditionType.RELEASED)
    assert released == Condition(
        type="Released",
        status=ConditionStatus.TRUE,
        reason="Succeeded",
        message="Release was successful for Helm release 'apps-podinfo' in 'apps'.",
        last_update_time=datetime(2026, 1, 1, 10, tzinfo=UTC),
        last_transition_time=datetime(2026, 1, 1, 9, tzinfo=UTC),
    )
    assert status.condition(ConditionType.READY) is None
    assert (status.last_action, status.failures, status.last_applied_digest) == (None, 0, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("phase", "Migrating", id="old-phase"),
        pytest.param("lastAction", "migrate", id="new-action"),
    ],
)
def test_values_this_version_does_not_know_read_as_unset(field: str, value: str) -> None:
    status = HelmReleaseStatus.model_validate({field: value, "releaseName": "r"})
    assert status.model_dump()[{"phase": "phase", "lastAction": "last_action"}[field]] is None
    assert status.release_name == "r"


def test_patch_clears_what_is_unset_and_leaves_kopf_alone() -> None:
    status = HelmReleaseStatus(phase=Phase.ROLLED_BACK, last_action=Action.ROLLBACK, helm_revision=5)
    patch = status.as_patch()
    assert patch["phase"] == "RolledBack"
    assert patch["lastAction"] == "rollback"
    assert patch["lastAppliedDigest"] is None, "a merge patch with null removes a stale digest"
    assert "kopf" not in patch
    assert HelmReleaseStatus.model_validate({**patch, "kopf": {"progress": {}}}) == status


@pytest.mark.parametrize(
    ("antecedent", "ownership"),
    [
        pytest.param("apps:helmrelease/podinfo", Ownership.OURS, id="ours"),
        pytest.param("apps:HelmRelease/podinfo", Ownership.OURS, id="kind-case-insensitive"),
        pytest.param("apps:helmrelease/other", Ownership.OTHER, id="other-name"),
        pytest.param("team:helmrelease/podinfo", Ownership.OTHER, id="other-namespace"),
        pytest.param("Apps:helmrelease/podinfo", Ownership.OTHER, id="namespace-case-sensitive"),
        pytest.param("apps:deployment/podinfo", Ownership.OTHER, id="other-kind"),
        pytest.param("garbage", Ownership.OTHER, id="unparsable-but-marked"),
        pytest.param("", Ownership.UNMARKED, id="empty"),
        pytest.param(None, Ownership.UNMARKED, id="absent"),
    ],
)
def test_ownership_of(antecedent: str | None, ownership: Ownership) -> None:
    assert ownership_of(antecedent, namespace="apps", name="podinfo") is ownership


def test_antecedent_value_is_recognised_as_ours() -> None:
    value = antecedent_value("apps", "podinfo")
    assert value == "apps:helmrelease/podinfo"
    assert ownership_of(value, namespace="apps", name="podinfo") is Ownership.OURS


@pytest.mark.parametrize(
    ("status", "pending"),
    [(status, status.value.startswith("pending-")) for status in HelmStatus],
    ids=[status.value for status in HelmStatus],
)
def test_pending_statuses(status: HelmStatus, pending: bool) -> None:
    assert status.is_pending is pending


def test_only_helm_actions_are_recorded() -> None:
    assert {action for action in Action if action.runs_helm} == {
        Action.INSTALL,
        Action.UPGRADE,
        Action.TEST,
        Action.ROLLBACK,
        Action.UNLOCK,
        Action.UNINSTALL,
        Action.ADOPT,
        Action.UNINSTALL_PREVIOUS,
    }
