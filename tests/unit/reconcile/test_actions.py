"""The one table of what each Helm action is called and reported under."""

from __future__ import annotations

import pytest

from helmrelease.api.constants import Action, ConditionType, Reason
from helmrelease.reconcile.actions import TERMS, terms


def test_every_helm_action_has_one_row_and_no_decision_has_one() -> None:
    assert set(TERMS) == {action for action in Action if action.runs_helm}
    for decision in (Action.NOTHING, Action.WAIT_RETRY, Action.REFUSE, Action.RECORD):
        with pytest.raises(ValueError, match="decision"):
            terms(decision)


@pytest.mark.parametrize(
    ("action", "succeeded", "failed", "condition", "timeout"),
    [
        (
            Action.INSTALL,
            Reason.INSTALL_SUCCEEDED,
            Reason.INSTALL_FAILED,
            ConditionType.RELEASED,
            "spec.timeout",
        ),
        (
            Action.UPGRADE,
            Reason.UPGRADE_SUCCEEDED,
            Reason.UPGRADE_FAILED,
            ConditionType.RELEASED,
            "spec.timeout",
        ),
        (Action.ADOPT, Reason.ADOPTED, Reason.ADOPT_FAILED, ConditionType.RELEASED, "spec.timeout"),
        (Action.TEST, Reason.TEST_SUCCEEDED, Reason.TEST_FAILED, ConditionType.TESTED, "spec.test.timeout"),
        (
            Action.ROLLBACK,
            Reason.ROLLBACK_SUCCEEDED,
            Reason.ROLLBACK_FAILED,
            ConditionType.ROLLED_BACK,
            "spec.rollback.timeout",
        ),
        (Action.UNLOCK, Reason.UNLOCKED, Reason.UNLOCK_FAILED, ConditionType.RELEASED, "spec.timeout"),
        (
            Action.UNINSTALL,
            Reason.UNINSTALLED,
            Reason.UNINSTALL_FAILED,
            ConditionType.RELEASED,
            "spec.timeout",
        ),
        (
            Action.UNINSTALL_PREVIOUS,
            Reason.UNINSTALLED,
            Reason.UNINSTALL_FAILED,
            ConditionType.RELEASED,
            "spec.timeout",
        ),
    ],
)
def test_each_action_is_reported_under_its_reasons(
    action: Action, succeeded: Reason, failed: Reason, condition: ConditionType, timeout: str
) -> None:
    row = terms(action)
    assert (row.succeeded, row.failed, row.condition, row.timeout_field) == (
        succeeded,
        failed,
        condition,
        timeout,
    )


def test_only_what_the_cluster_can_fail_is_retried_by_itself() -> None:
    """Install, upgrade, test and rollback; an adoption is recorded as the upgrade it is, so its row says no."""
    retried = {action for action, row in TERMS.items() if row.cluster_retried}
    assert retried == {Action.INSTALL, Action.UPGRADE, Action.TEST, Action.ROLLBACK}
